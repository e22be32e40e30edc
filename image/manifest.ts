import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../lib/config-schema.js';
import { UsageError } from '../lib/errors.js';
import type { MediumMount } from './medium.js';

// The image directory is the contract between builder and deploy: deploy reads only
// manifest.json and the files it names, never the build's internals or the repository.
// Everything deploy needs from the commit (where the machine is, its boot medium, the
// trial timings, the health checks) is carried here, as the commit said it.

export type SegmentName = 'base' | 'overlay' | 'secrets';

export interface Segment {
  name: SegmentName;
  file: string;
  sha256: string;
  bytes: number;
}

export interface ManifestFile {
  path: string;
  type?: string;
  /** Symlink target. */
  target?: string;
  mode: number;
  /** Owner and group ids; absent in images built before ramboot recorded them. */
  uid?: number;
  gid?: number;
  size: number;
  sha256?: string;
  segment: SegmentName;
}

/** The parts of the commit's ramboot.yaml that say how to deploy it (durations in ms). */
export type DeploySettings = Pick<Config, 'host' | 'boot' | 'trial' | 'health'>;

export const MANIFEST_FORMAT = 2;

export interface Manifest {
  formatVersion: typeof MANIFEST_FORMAT;
  buildId: string;
  commit?: string;
  commitTime: number;
  inputsHash: string;
  /** Which repository the image was built from (a path or URL): its state directory's key. */
  origin: string;
  /** The machine, when the repository describes several (machines/NAME/): part of the state directory's key. */
  machine?: string;
  distro: { name: string; release: string; arch: string };
  host: string;
  settings: DeploySettings;
  kernel: { file: string; sha256: string; bytes: number; version?: string };
  ucode?: { file: string; sha256: string; bytes: number };
  segments: Segment[];
  packages: { name: string; version: string }[];
  services: Record<string, string[]>;
  /** Files of the image; secrets list path and mode only, never a content hash. */
  files: ManifestFile[];
  /** Public half of the SSH host key secret: what deploy pins. */
  hostKey?: string;
  /** secrets.at_rest: tpm: the secrets segment holds them encrypted to these age recipients, the machine's (sealed in its TPM) first. */
  sealed?: { recipients: string[] };
  append: string;
  /** The boot medium as the image's fstab mounts it (what `ramboot format` must match, what deploy checks keeps secrets private). */
  medium?: MediumMount;
}

export const MANIFEST = 'manifest.json';

/** The manifest of an image directory; a UsageError saying what is wrong when it cannot be read. */
export async function readManifest(imageDir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(join(imageDir, MANIFEST), 'utf8');
  } catch (err) {
    throw notAnImage(imageDir, err);
  }
  return parseManifest(text, imageDir);
}

/** readManifest, synchronously: for walks over many image directories. */
export function readManifestSync(imageDir: string): Manifest {
  let text: string;
  try {
    text = readFileSync(join(imageDir, MANIFEST), 'utf8');
  } catch (err) {
    throw notAnImage(imageDir, err);
  }
  return parseManifest(text, imageDir);
}

function notAnImage(imageDir: string, err: unknown): UsageError {
  return new UsageError(`failed to read image ${imageDir}: no ${MANIFEST} (is it an image directory made by \`ramboot build\`?)`, { step: 'read image', input: imageDir }, { cause: err });
}

function parseManifest(text: string, imageDir: string): Manifest {
  const file = join(imageDir, MANIFEST);
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch (err) {
    throw new UsageError(`failed to read ${file}: not JSON (${(err as Error).message})`, { step: 'read image', input: file }, { cause: err });
  }
  if (m.formatVersion !== MANIFEST_FORMAT) {
    throw new UsageError(`failed to read image ${imageDir}: manifest format ${m.formatVersion}, this ramboot reads ${MANIFEST_FORMAT}; build the commit again`, {
      step: 'read image',
      input: file,
    });
  }
  return m;
}
