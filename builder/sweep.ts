import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BuildError } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { unmount } from './chroot.js';
import type { Work } from './work.js';

// A build that was SIGKILLed could not undo its mounts or remove its directories. Every
// directory a build makes carries its pid in its name; the next build removes those of
// processes that are gone: it unmounts first, deepest mount first, and deletes only once
// nothing is mounted below, never crossing into another file system.

/** The name part that says which process made a directory: "build-<id>-pid<pid>-<random>". */
export function pidTag(pid = process.pid): string {
  return `pid${pid}`;
}

export function ownerPid(name: string): number | undefined {
  const m = /-pid(\d+)(?:-|$)/.exec(name);
  return m ? Number(m[1]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo; octal escapes decoded). */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map(unescape)
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Removes a directory a build made: unmounts what is below it, then deletes it on its own file system only. */
export async function removeBuildDir(dir: string, work: Pick<Work, 'emit'>): Promise<void> {
  for (const m of mountsUnder(dir)) await unmount(m, work);
  const left = mountsUnder(dir);
  if (left.length > 0) {
    throw new BuildError(`failed to remove ${dir}: ${left.join(', ')} is still mounted; unmount it by hand (umount -l)`, { step: 'clean up', input: dir });
  }
  await run('rm', ['-rf', '--one-file-system', dir], { step: `remove ${dir}` });
}

/** Removes what builds that no longer run left in these directories; returns what it removed. */
export async function sweepLeftovers(dirs: string[], work: Pick<Work, 'emit'>): Promise<string[]> {
  const removed: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      if (!name.startsWith('.tmp-') && !name.startsWith('build-') && !name.includes('.tmp-pid')) continue;
      const pid = ownerPid(name);
      if (pid === undefined || pid === process.pid || alive(pid)) continue;
      const path = join(dir, name);
      await removeBuildDir(path, work);
      removed.push(path);
    }
  }
  if (removed.length > 0) {
    work.emit({ kind: 'warn', source: 'build', message: `removed what an interrupted build left: ${removed.join(', ')}` });
  }
  return removed;
}
