import type { Config } from '../../lib/config-schema.js';
import type { Work } from '../work.js';

export interface StageRequest {
  config: Config;
  packages: string[];
  /** Host directory for the package manager's download cache (kept between builds). */
  cacheDir: string;
  /** Resolves a path in ramboot.yaml (a local mirror or tarball) against the repository. */
  resolvePath(p: string): string;
  /** The repository's working tree (or the directory built): a local mirror may be inside it. */
  repoDir: string;
  /** A file of the commit (or directory) being built, e.g. a key distro.keys lists. */
  readFile(path: string): Promise<Buffer | undefined>;
}

export interface InstalledPackage {
  name: string;
  version: string;
}

/** A distro bootstraps a root file system with the packages installed into an empty directory. */
export interface DistroBackend {
  name: 'alpine' | 'debian';
  /** The module's import.meta.url: its code is part of the stage's cache key. */
  source: string;
  /** What the package stage depends on, beyond the package list: goes into the cache key. */
  keyInputs(req: StageRequest): Promise<Record<string, unknown>>;
  create(req: StageRequest, root: string, work: Work): Promise<void>;
  installed(root: string): Promise<InstalledPackage[]>;
}
