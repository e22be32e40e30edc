import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DistroBackend, InstalledPackage, StageRequest } from './distro/backend.js';
import { recipeHash } from './recipe.js';
import { SANDBOX_SOURCE } from './sandbox.js';
import { pidTag, removeBuildDir } from './sweep.js';
import type { Work } from './work.js';

// The package stage: the root file system with only the packages installed. It is the
// slow part of a build, so it is cached, keyed by everything it depends on; a commit
// that changes only root/ or setup.sh reuses it untouched (it is overlayfs's lowerdir).

/** This module's part of the stage recipe. */
export const STAGE_SOURCE = import.meta.url;

export interface Stage {
  /** What the stage was made from (the cache key). */
  key: string;
  /** What it holds: the installed packages and versions. A refresh changes this, not the key. */
  contentId: string;
  root: string;
  packages: InstalledPackage[];
  reused: boolean;
}

export async function stageKey(backend: DistroBackend, req: StageRequest): Promise<string> {
  const inputs = { recipe: recipeHash(STAGE_SOURCE, SANDBOX_SOURCE, backend.source), distro: backend.name, packages: [...new Set(req.packages)].sort(), ...(await backend.keyInputs(req)) };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex');
}

export async function packageStage(backend: DistroBackend, req: StageRequest, cacheRoot: string, work: Work, opts: { fresh?: boolean } = {}): Promise<Stage> {
  const key = await stageKey(backend, req);
  const dir = join(cacheRoot, 'stages', key);
  const made = (packages: InstalledPackage[], reused: boolean): Stage => ({ key, contentId: contentId(packages), root: join(dir, 'root'), packages, reused });
  if (!opts.fresh && existsSync(join(dir, 'packages.json'))) return made(JSON.parse(readFileSync(join(dir, 'packages.json'), 'utf8')), true);
  const tmp = join(cacheRoot, 'stages', `.tmp-${key}-${pidTag()}`);
  mkdirSync(join(tmp, 'root'), { recursive: true });
  try {
    await backend.create(req, join(tmp, 'root'), work);
    const packages = await backend.installed(join(tmp, 'root'));
    writeFileSync(join(tmp, 'packages.json'), JSON.stringify(packages));
    if (existsSync(dir) && !opts.fresh) {
      // Another build made this stage meanwhile: builds of one key agree on the one cached.
      await removeBuildDir(tmp, work);
      return made(JSON.parse(readFileSync(join(dir, 'packages.json'), 'utf8')), true);
    }
    if (existsSync(dir)) {
      // A fresh stage replaces the cached one; the old one goes once the new one is in place.
      const old = join(cacheRoot, 'stages', `.tmp-${key}-old-${pidTag()}`);
      renameSync(dir, old);
      renameSync(tmp, dir);
      await removeBuildDir(old, work);
    } else {
      renameSync(tmp, dir);
    }
    return made(packages, false);
  } catch (err) {
    await removeBuildDir(tmp, work);
    throw err;
  }
}

function contentId(packages: InstalledPackage[]): string {
  return createHash('sha256').update(JSON.stringify(packages)).digest('hex');
}
