import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Config } from '../lib/config-schema.js';
import { BuildError } from '../lib/errors.js';
import type { Source } from './source.js';

// root/ is copied over the new root: owned root:root unless ramboot.yaml says
// otherwise (skeleton.owners), modes from git (0755 when executable, else 0644).
// Modes are set with chmod after creating: the mode given to open/mkdir is narrowed by
// the builder's umask (077 would make /etc/hosts 0600 on the machine).

export async function applySkeleton(source: Source, config: Config, root: string): Promise<number> {
  const files = await source.list('root');
  for (const f of files) {
    const rel = f.path.slice('root/'.length);
    if (rel.split('/').includes('..')) {
      throw new BuildError(`failed to copy ${f.path}: the path leaves the image root`, { step: 'apply skeleton', input: f.path });
    }
    const dest = join(root, rel);
    ensureDirs(root, dirname(rel));
    if (existsSync(dest) || isSymlink(dest)) rmSync(dest, { recursive: true, force: true });
    const data = await f.read();
    if (f.kind === 'symlink') symlinkSync(data.toString(), dest);
    else writeFile(dest, data, f.kind === 'executable' ? 0o755 : 0o644);
    const [uid, gid] = (config.skeleton.owners[rel] ?? '0:0').split(':').map(Number) as [number, number];
    // lchown: a symlink's own owner; chown would follow an absolute link out of the root.
    lchownSync(dest, uid, gid);
  }
  return files.length;
}

/** Writes a file of the image with exactly this mode, whatever the umask. */
export function writeFile(path: string, data: Buffer | string, mode: number): void {
  writeFileSync(path, data, { mode });
  chmodSync(path, mode);
}

/** Creates the missing parents of rel (0755, root-owned); existing ones keep their metadata. */
export function ensureDirs(root: string, rel: string): void {
  let cur = root;
  for (const part of rel.split('/').filter((p) => p && p !== '.')) {
    cur = join(cur, part);
    if (!existsSync(cur)) {
      mkdirSync(cur);
      chmodSync(cur, 0o755);
      chownSync(cur, 0, 0);
    }
  }
}

function isSymlink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
