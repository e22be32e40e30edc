import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ManifestFile } from '../image/manifest.js';
import { isDeleted, type Deletions } from './overlay.js';
import { CPIO_SOURCE, type CpioEntry } from './cpio.js';
import { recipeHash } from './recipe.js';
import { SEGMENT_SOURCE, writeSegment } from './segment.js';
import { pidTag } from './sweep.js';
import type { Stage } from './stage.js';
import { TREE_SOURCE, walkTree } from './tree.js';

// base.cpio.zst is everything from packages, minus what the skeleton or setup.sh
// deleted; overlay.cpio.zst is the overlay's upper directory. The kernel unpacks the
// overlay over the base, so changed files need not leave the base: a root/-only change
// keeps the base byte-identical, and it is packed once and then taken from the cache.
// /boot is left out of both: the bootloader loads the kernel from the medium.

// The cache key holds the recipe (this module and those it packs with, builder/recipe.ts):
// a change to how the base is packed or described misses the cache by itself.

/** Base mtimes are fixed: the same package set gives the same bytes whichever commit built it. */
const BASE_MTIME = 0;

export interface PackedTree {
  segment: { file: string; sha256: string; bytes: number };
  files: Omit<ManifestFile, 'segment'>[];
  /** Paths that share their inode with another path of the segment (hardlinks). */
  linked: string[];
  reused: boolean;
}

const inBoot = (path: string) => path.startsWith('boot/');

export async function packBase(stage: Stage, d: Deletions, cacheDir: string, outFile: string): Promise<PackedTree> {
  const key = createHash('sha256')
    .update(JSON.stringify({ recipe: recipeHash(import.meta.url, CPIO_SOURCE, TREE_SOURCE, SEGMENT_SOURCE), stage: stage.key, content: stage.contentId, removed: [...d.removed].sort(), opaque: [...d.opaque].sort() }))
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
  // Names of this process's own: two builds may pack the same base at once; each rename is whole.
  const tmp = `${cached}.tmp-${pidTag()}`;
  rmSync(tmp, { force: true });
  const segment = await writeSegment(entries, tmp);
  const packed = { segment: { ...segment, file: 'base.cpio.zst' }, files: describe(entries), linked: linkedPaths(entries) };
  writeFileSync(`${meta}.tmp-${pidTag()}`, JSON.stringify(packed));
  renameSync(tmp, cached);
  renameSync(`${meta}.tmp-${pidTag()}`, meta);
  copyFileSync(cached, outFile);
  return { ...packed, reused: false };
}

/**
 * The overlay's files get the base's fixed time, not their time on disk: files the
 * skeleton, setup.sh or an overlayfs copy-up wrote carry the time of the build, which
 * would make the same commit give other bytes on another day. Not the commit's time
 * either: that would change every header in every commit, and a commit that changes one
 * file would send the whole overlay again (deploy/delta.ts). The commit and its time
 * are in /etc/ramboot-release.
 */
export async function packOverlay(upper: string, outFile: string, baseLinked: ReadonlySet<string>): Promise<PackedTree> {
  const entries = await walkTree(upper, { exclude: inBoot, mtime: () => BASE_MTIME });
  // Whiteouts mark deletions; those are applied by leaving the path out of the base.
  const kept = entries.filter((e) => !(e.type === 'char' && e.rdevMajor === 0 && e.rdevMinor === 0));
  const segment = await writeSegment(unlinkFirst(kept, baseLinked), outFile);
  return { segment: { ...segment, file: 'overlay.cpio.zst' }, files: describe(kept), linked: linkedPaths(kept), reused: false };
}

/**
 * Hardlinks across segments. The kernel's unpacker (init/initramfs.c) does not replace a
 * regular file that an earlier archive made: do_name() calls clean_path(), which unlinks
 * the existing path only when its type differs ((st.mode ^ fmode) & S_IFMT), and then
 * opens the name O_WRONLY|O_CREAT|O_TRUNC. A name the base linked to others is thus
 * truncated and rewritten in place, through the inode all its names share, and every
 * name of the group would get the overlay's content (and mode and owner: fchown and
 * fchmod act on the inode too). Linking back is no way out either: maybe_link()'s table
 * is freed at each archive's TRAILER!!!.
 *
 * So before an entry that replaces a member of an earlier segment's link group comes a
 * symlink of the same name: do_symlink() calls clean_path(name, 0), which unlinks
 * whatever is there (a mode of 0 differs from every type), and the entry after it finds
 * a symlink, another type, which clean_path() unlinks in turn. The replacing entry gets
 * an inode of its own; the group's other names keep the earlier segment's content.
 */
export function unlinkFirst(entries: CpioEntry[], linkedBefore: ReadonlySet<string>): CpioEntry[] {
  if (linkedBefore.size === 0) return entries;
  return entries.flatMap((e) =>
    e.type !== 'dir' && e.type !== 'symlink' && linkedBefore.has(e.path)
      ? [{ path: e.path, type: 'symlink' as const, linkTarget: UNLINK_TARGET, mode: 0o777, uid: 0, gid: 0, mtime: e.mtime }, e]
      : [e],
  );
}

/** What the stand-in symlink points to: it lives only until the next entry replaces it. */
const UNLINK_TARGET = '/dev/null';

function linkedPaths(entries: CpioEntry[]): string[] {
  return entries.filter((e) => e.linkId !== undefined).map((e) => e.path);
}

function describe(entries: CpioEntry[]): Omit<ManifestFile, 'segment'>[] {
  return entries.map((e) => ({
    path: e.path,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.type === 'file' ? (e.size ?? 0) : 0,
    ...(e.type === 'file' && e.source ? { sha256: createHash('sha256').update(readFileSync(e.source)).digest('hex') } : {}),
    ...(e.type === 'symlink' ? { target: e.linkTarget } : {}),
    type: e.type,
  }));
}
