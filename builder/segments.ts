import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CpioEntry } from './cpio.js';
import type { ManifestFile } from '../image/manifest.js';
import { isDeleted, type Deletions } from './overlay.js';
import { writeSegment } from './segment.js';
import type { Stage } from './stage.js';
import { walkTree } from './tree.js';

// base.cpio.zst is everything from packages, minus what the skeleton or setup.sh
// deleted; overlay.cpio.zst is the overlay's upper directory. The kernel unpacks the
// overlay over the base, so changed files need not leave the base: a root/-only change
// keeps the base byte-identical, and it is packed once and then taken from the cache.
// /boot is left out of both: the bootloader loads the kernel from the medium.

const BASE_FORMAT = 1;

/** Base mtimes are fixed: the same package set gives the same bytes whichever commit built it. */
const BASE_MTIME = 0;

export interface PackedTree {
  segment: { file: string; sha256: string; bytes: number };
  files: Omit<ManifestFile, 'segment'>[];
  reused: boolean;
}

const inBoot = (path: string) => path.startsWith('boot/');

export async function packBase(stage: Stage, d: Deletions, cacheDir: string, outFile: string): Promise<PackedTree> {
  const key = createHash('sha256')
    .update(JSON.stringify({ format: BASE_FORMAT, stage: stage.key, content: stage.contentId, removed: [...d.removed].sort(), opaque: [...d.opaque].sort() }))
    .digest('hex');
  const cached = join(cacheDir, `${key}.cpio.zst`);
  const meta = join(cacheDir, `${key}.json`);
  if (existsSync(cached) && existsSync(meta)) {
    copyFileSync(cached, outFile);
    return { ...JSON.parse(readFileSync(meta, 'utf8')), reused: true };
  }
  mkdirSync(cacheDir, { recursive: true });
  const entries = await walkTree(stage.root, {
    exclude: (path) => inBoot(path) || isDeleted(path, d),
    mtime: () => BASE_MTIME,
  });
  rmSync(`${cached}.tmp`, { force: true });
  const segment = await writeSegment(entries, `${cached}.tmp`);
  const packed = { segment: { ...segment, file: 'base.cpio.zst' }, files: describe(entries) };
  writeFileSync(meta, JSON.stringify(packed));
  renameSync(`${cached}.tmp`, cached);
  copyFileSync(cached, outFile);
  return { ...packed, reused: false };
}

export async function packOverlay(upper: string, sourceTime: number, outFile: string): Promise<PackedTree> {
  const entries = await walkTree(upper, {
    exclude: inBoot,
    mtime: (_path, actual) => Math.min(actual, sourceTime),
  });
  // Whiteouts mark deletions; those are applied by leaving the path out of the base.
  const kept = entries.filter((e) => !(e.type === 'char' && e.rdevMajor === 0 && e.rdevMinor === 0));
  const segment = await writeSegment(kept, outFile);
  return { segment: { ...segment, file: 'overlay.cpio.zst' }, files: describe(kept), reused: false };
}

function describe(entries: CpioEntry[]): Omit<ManifestFile, 'segment'>[] {
  return entries.map((e) => ({
    path: e.path,
    mode: e.mode,
    size: e.type === 'file' ? (e.size ?? 0) : 0,
    ...(e.type === 'file' && e.source ? { sha256: createHash('sha256').update(readFileSync(e.source)).digest('hex') } : {}),
    ...(e.type === 'symlink' ? { target: e.linkTarget } : {}),
    type: e.type,
  }));
}
