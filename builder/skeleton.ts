import { chmodSync, chownSync, constants, copyFileSync, lchownSync, lstatSync, mkdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../lib/config-schema.js';
import { BuildError } from '../lib/errors.js';
import type { Source } from './source.js';

// root/ is copied over the new root: owned root:root unless ramboot.yaml says
// otherwise (skeleton.owners), modes from git (0755 when executable, else 0644).
// Modes are set with chmod after creating: the mode given to open/mkdir is narrowed by
// the builder's umask (077 would make /etc/hosts 0600 on the machine).
//
// Every write into the new root goes through imagePath: a symlink on the way is
// resolved as the machine will resolve it, inside the root (the stages have
// var/run -> /run, and a minirootfs a commit names can carry any link), so nothing is
// ever written to or removed from the build host's own /run or /etc.

/** Links followed along one path before it counts as a loop (Linux's own limit). */
const MAX_LINKS = 40;

export async function applySkeleton(source: Source, config: Config, root: string): Promise<number> {
  const files = await source.list('root');
  for (const f of files) {
    const rel = f.path.slice('root/'.length);
    if (rel.split('/').includes('..')) {
      throw new BuildError(`failed to copy ${f.path}: the path leaves the image root`, { step: 'apply skeleton', input: f.path });
    }
    const dest = imagePath(root, rel, f.path);
    if (lstatOf(dest)) rmSync(dest, { recursive: true, force: true });
    const data = await f.read();
    if (f.kind === 'symlink') symlinkSync(data.toString(), dest);
    else writeNew(dest, data, f.kind === 'executable' ? 0o755 : 0o644);
    const [uid, gid] = (config.skeleton.owners[rel] ?? '0:0').split(':').map(Number) as [number, number];
    // lchown: a symlink's own owner; chown would follow an absolute link out of the root.
    lchownSync(dest, uid, gid);
  }
  return files.length;
}

/**
 * The host path of rel in the image: its parents resolved inside root (created when
 * missing, 0755 root-owned), its last name not followed (it is what gets replaced).
 * A link that leads above the root is an error naming `file`.
 */
export function imagePath(root: string, rel: string, file = rel): string {
  const parts = rel.split('/').filter((p) => p && p !== '.');
  const name = parts.pop();
  if (name === undefined || name === '..') throw new BuildError(`failed to write ${file}: it names no file in the image`, { step: 'write into the image', input: file });
  return join(root, ...resolveDirs(root, parts, file), name);
}

/** Creates the missing parents of rel (0755, root-owned); existing ones keep their metadata. */
export function ensureDirs(root: string, rel: string): void {
  resolveDirs(root, rel.split('/'), rel);
}

/** Writes a file of the image with exactly this mode, whatever the umask, replacing what was at rel. */
export function writeImageFile(root: string, rel: string, data: Buffer | string, mode: number): void {
  const dest = imagePath(root, rel);
  rmSync(dest, { force: true });
  writeNew(dest, data, mode);
}

/** Copies a host file into the image (root-owned, this mode), replacing what was at rel. */
export function copyIntoImage(src: string, root: string, rel: string, mode: number): void {
  const dest = imagePath(root, rel);
  rmSync(dest, { force: true });
  copyFileSync(src, dest, constants.COPYFILE_EXCL);
  chmodSync(dest, mode);
  chownSync(dest, 0, 0);
}

/** Creates a file that must not exist yet: never opened through a link that was put there. */
function writeNew(path: string, data: Buffer | string, mode: number): void {
  writeFileSync(path, data, { mode, flag: 'wx' });
  chmodSync(path, mode);
}

/**
 * Walks parts from root as the machine's kernel would, following symlinks (an absolute
 * target starts again at root), and returns the real directories, relative to root.
 */
function resolveDirs(root: string, parts: string[], file: string): string[] {
  const done: string[] = [];
  const todo = [...parts];
  let links = 0;
  while (todo.length > 0) {
    const part = todo.shift()!;
    if (!part || part === '.') continue;
    if (part === '..') {
      if (done.length === 0) throw escapes(file);
      done.pop();
      continue;
    }
    const path = join(root, ...done, part);
    const st = lstatOf(path);
    if (st?.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new BuildError(`failed to write ${file}: too many symlinks along its path (a loop?)`, { step: 'write into the image', input: file });
      const target = readlinkSync(path);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...target.split('/'));
      continue;
    }
    if (!st) {
      mkdirSync(path);
      chmodSync(path, 0o755);
      chownSync(path, 0, 0);
    } else if (!st.isDirectory()) {
      throw new BuildError(`failed to write ${file}: ${[...done, part].join('/')} is a file in the image, not a directory`, { step: 'write into the image', input: file });
    }
    done.push(part);
  }
  return done;
}

function escapes(file: string): BuildError {
  return new BuildError(
    `failed to write ${file}: a symlink along its path leads above the image's / (too many ".."); point the link at a path inside the image`,
    { step: 'write into the image', input: file },
  );
}

/** lstat, or undefined when nothing is there. */
export function lstatOf(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}
