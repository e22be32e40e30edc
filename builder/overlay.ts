import { lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../lib/run.js';
import { unmount } from './chroot.js';
import type { Work } from './work.js';

// The skeleton and setup.sh run on an overlayfs over the cached package stage, so
// the upper directory holds exactly what they added or changed (docs/ARCHITECTURE.md, "The contract: the image directory"), and a
// whiteout (char device 0/0) or an opaque directory for what they deleted.

export interface OverlayDirs {
  upper: string;
  work: string;
  merged: string;
}

export function overlayDirs(buildDir: string): OverlayDirs {
  const dirs = { upper: join(buildDir, 'upper'), work: join(buildDir, 'work'), merged: join(buildDir, 'merged') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  return dirs;
}

export async function withOverlay<T>(lower: string, dirs: OverlayDirs, w: Work, fn: (merged: string) => Promise<T>): Promise<T> {
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${dirs.upper},workdir=${dirs.work}`, dirs.merged], {
    step: 'mount the build overlay',
  });
  try {
    return await fn(dirs.merged);
  } finally {
    await unmount(dirs.merged, w);
  }
}

export interface Deletions {
  /** Paths removed from the package stage (whiteouts), relative, no leading '/'. */
  removed: Set<string>;
  /** Directories whose lower contents are hidden (deleted and recreated). */
  opaque: Set<string>;
}

export async function deletions(upper: string): Promise<Deletions> {
  const removed = new Set<string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(upper, rel))) {
      const path = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(upper, path));
      if (st.isCharacterDevice() && st.rdev === 0) removed.add(path);
      else if (st.isDirectory()) walk(path);
    }
  };
  walk('');
  return { removed, opaque: await opaqueDirs(upper) };
}

async function opaqueDirs(upper: string): Promise<Set<string>> {
  const { stdout } = await run('getfattr', ['-R', '-h', '--absolute-names', '-m', '^trusted\\.overlay\\.opaque$', upper], {
    step: 'list opaque directories of the overlay',
  });
  const out = new Set<string>();
  for (const line of stdout.split('\n')) {
    if (line.startsWith('# file: ')) out.add(line.slice(8).slice(upper.length + 1));
  }
  return out;
}

/** Whether a path of the package stage is hidden by the overlay. */
export function isDeleted(path: string, d: Deletions): boolean {
  let p = path;
  for (;;) {
    if (d.removed.has(p)) return true;
    const slash = p.lastIndexOf('/');
    if (slash < 0) return false;
    p = p.slice(0, slash);
    if (d.opaque.has(p)) return true;
  }
}
