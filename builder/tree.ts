import { lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { join, resolve } from 'node:path';
import { BuildError, describe } from '../lib/errors.js';
import type { CpioEntry, EntryType } from './cpio.js';

/** This module's part of the base segment's recipe (builder/recipe.ts). */
export const TREE_SOURCE = import.meta.url;

export interface TreeOptions {
  /** True leaves the path out; for a directory, its whole subtree. */
  exclude?: (relPath: string) => boolean;
  /** The mtime to record (the caller clamps, e.g. to the commit time). */
  mtime?: (relPath: string, actualMtime: number) => number;
  /** Owner to record instead of the one on disk. */
  owner?: (relPath: string, st: Stats) => { uid: number; gid: number };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Lists a directory tree as archive entries, without the root itself and without
 * following symlinks, sorted bytewise by path so parents precede children and the
 * order never depends on the filesystem. Files sharing an inode inside the tree become
 * one hardlink group. Synchronous calls: on a page-cached tree they are several times
 * faster than fs.promises, and the walk is a small part of packing.
 */
export function walkTree(rootDir: string, opts: TreeOptions = {}): CpioEntry[] {
  const base = resolve(rootDir);
  const prefix = base === '/' ? '/' : `${base}/`;
  if (!statPath(base).isDirectory()) throw new BuildError(`failed to walk ${rootDir}: not a directory`, { step: 'walk tree', input: rootDir });
  const entries: CpioEntry[] = [];
  const subdirs = new Map<string, number>();
  const stack: string[] = [''];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    for (const name of listDir(base, dir)) {
      const rel = dir === '' ? name : `${dir}/${name}`;
      if (opts.exclude?.(rel)) continue;
      // Names from readdir need no normalising; path.join would cost more than the concatenation.
      const abs = prefix + rel;
      const st = statPath(abs);
      const entry = toEntry(rel, abs, st, opts);
      entries.push(entry);
      if (entry.type === 'dir') {
        stack.push(rel);
        subdirs.set(dir, (subdirs.get(dir) ?? 0) + 1);
      }
    }
  }
  for (const e of entries) if (e.type === 'dir') e.nlink = 2 + (subdirs.get(e.path) ?? 0);
  settleHardlinks(entries);
  return entries.sort((a, b) => compareUtf8(a.path, b.path));
}

function toEntry(rel: string, abs: string, st: Stats, opts: TreeOptions): CpioEntry {
  const type = entryType(st, abs);
  const owner = opts.owner ? opts.owner(rel, st) : { uid: st.uid, gid: st.gid };
  const actual = Math.floor(st.mtimeMs / 1000);
  const entry: CpioEntry = {
    path: rel,
    type,
    mode: st.mode & 0o7777,
    uid: owner.uid,
    gid: owner.gid,
    mtime: opts.mtime ? opts.mtime(rel, actual) : actual,
  };
  if (type === 'file') {
    entry.source = abs;
    entry.size = st.size;
  } else if (type === 'symlink') {
    entry.linkTarget = readLink(abs);
  } else if (type === 'char' || type === 'block') {
    Object.assign(entry, splitRdev(st.rdev));
  }
  // Symlinks and directories cannot be hardlinked in an initramfs; each stands alone.
  if (st.nlink > 1 && type !== 'dir' && type !== 'symlink') entry.linkId = inodeKey(abs);
  return entry;
}

function entryType(st: Stats, abs: string): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  throw new BuildError(`failed to walk ${abs}: unknown file type (mode ${st.mode.toString(8)})`, { step: 'walk tree', input: abs });
}

/** Groups by inode: only links inside the tree count; a lone member is a plain entry. */
function settleHardlinks(entries: CpioEntry[]): void {
  const members = new Map<string, CpioEntry[]>();
  for (const e of entries) {
    if (e.linkId === undefined) continue;
    const group = members.get(e.linkId);
    if (group) group.push(e);
    else members.set(e.linkId, [e]);
  }
  for (const group of members.values()) {
    for (const e of group) {
      if (group.length === 1) delete e.linkId;
      else e.nlink = group.length;
    }
  }
}

/** Device and inode, exactly: inode numbers can exceed 2^53 (XFS, overlayfs xino). */
function inodeKey(abs: string): string {
  let st;
  try {
    st = lstatSync(abs, { bigint: true });
  } catch (err) {
    throw walkError(abs, err);
  }
  return `${st.dev}:${st.ino}`;
}

/** Linux's dev_t layout (glibc gnu_dev_major/minor), done without 32-bit bit operations. */
function splitRdev(rdev: number): { rdevMajor: number; rdevMinor: number } {
  const lo = rdev % 2 ** 32;
  const hi = Math.floor(rdev / 2 ** 32);
  return {
    rdevMajor: (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0,
    rdevMinor: ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0,
  };
}

/**
 * A directory's names. Node turns bytes that are not UTF-8 into U+FFFD, so only when
 * that character shows up are the raw bytes read, to fail loudly rather than mangle.
 */
function listDir(rootDir: string, dir: string): string[] {
  const abs = join(rootDir, dir);
  try {
    const names = readdirSync(abs);
    return names.some((n) => n.includes('\uFFFD')) ? readdirSync(abs, { encoding: 'buffer' }).map((raw) => decodeName(abs, raw)) : names;
  } catch (err) {
    throw err instanceof BuildError ? err : walkError(abs, err);
  }
}

function decodeName(dir: string, raw: Buffer): string {
  try {
    return utf8.decode(raw);
  } catch {
    throw new BuildError(`failed to walk ${dir}: the name ${JSON.stringify(raw.toString('latin1'))} is not valid UTF-8`, {
      step: 'walk tree',
      input: dir,
    });
  }
}

function statPath(abs: string): Stats {
  try {
    return lstatSync(abs);
  } catch (err) {
    throw walkError(abs, err);
  }
}

function readLink(abs: string): string {
  let raw: Buffer;
  try {
    raw = readlinkSync(abs, { encoding: 'buffer' });
  } catch (err) {
    throw walkError(abs, err);
  }
  try {
    return utf8.decode(raw);
  } catch {
    throw new BuildError(`failed to walk ${abs}: the symlink target is not valid UTF-8`, { step: 'walk tree', input: abs });
  }
}

/**
 * Compares as UTF-8 bytes would: UTF-16 order differs from code point order only when
 * a surrogate meets a unit at or above U+E000, so those are shifted past each other.
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

function walkError(abs: string, err: unknown): BuildError {
  return new BuildError(`failed to walk ${abs}: ${describe(err)}`, { step: 'walk tree', input: abs }, { cause: err });
}
