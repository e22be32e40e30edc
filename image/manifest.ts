import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BuildError } from '../lib/errors.js';

// The image directory is the contract between build and deploy: deploy reads
// only manifest.json and the files it names, never the build's internals.

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
  size: number;
  sha256?: string;
  segment: SegmentName;
}

export interface Manifest {
  formatVersion: 1;
  buildId: string;
  commit?: string;
  commitTime: number;
  inputsHash: string;
  distro: { name: string; release: string; arch: string };
  host: string;
  kernel: { file: string; sha256: string; bytes: number; version?: string };
  ucode?: { file: string; sha256: string; bytes: number };
  segments: Segment[];
  packages: { name: string; version: string }[];
  services: Record<string, string[]>;
  /** Files of the image; secrets list path and mode only, never a content hash. */
  files: ManifestFile[];
  /** Public half of the SSH host key secret: what deploy pins. */
  hostKey?: string;
  append: string;
  /** The boot medium as the image's fstab mounts it (what `ramboot format` must match). */
  medium?: { mountpoint: string; uuid?: string };
}

export const MANIFEST = 'manifest.json';

export async function readManifest(imageDir: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(join(imageDir, MANIFEST), 'utf8');
  } catch (err) {
    throw new BuildError(`failed to read image ${imageDir}: no ${MANIFEST}`, { step: 'read image', input: imageDir }, { cause: err });
  }
  return JSON.parse(text) as Manifest;
}
