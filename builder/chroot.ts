import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../lib/run.js';
import { runStep, type Work } from './work.js';

// Mounts made for a chroot are always undone, also when the work inside fails or is
// interrupted: a leftover bind mount of /dev under a build directory is a trap for
// `rm -rf`, and /proc under it is a trap for anything that walks the tree.

export interface Mount {
  source: string;
  target: string;
  type?: string;
  options?: string;
}

export function chrootMounts(root: string): Mount[] {
  return [
    { source: 'proc', target: join(root, 'proc'), type: 'proc' },
    { source: 'sysfs', target: join(root, 'sys'), type: 'sysfs' },
    { source: '/dev', target: join(root, 'dev'), options: 'bind' },
  ];
}

export async function withMounts<T>(mounts: Mount[], work: Work, fn: () => Promise<T>): Promise<T> {
  const done: Mount[] = [];
  try {
    for (const m of mounts) {
      mkdirSync(m.target, { recursive: true });
      const args = [...(m.type ? ['-t', m.type] : []), ...(m.options ? ['-o', m.options] : []), m.source, m.target];
      await run('mount', args, { step: `mount ${m.target}` });
      done.push(m);
    }
    return await fn();
  } finally {
    for (const m of done.reverse()) await unmount(m.target, work);
  }
}

/** Unmounts; a busy mount is detached lazily, so nothing below it is reachable through the tree. */
export async function unmount(target: string, work: Pick<Work, 'emit'>): Promise<void> {
  try {
    await run('umount', [target], { step: `unmount ${target}` });
  } catch (err) {
    work.emit({ kind: 'warn', source: 'build', message: `failed to unmount ${target} (${(err as Error).message.split('\n')[0]}); detaching it lazily` });
    await run('umount', ['-l', target], { step: `unmount ${target}` });
  }
}

/** Runs a shell script inside root with /proc, /sys and /dev mounted; the script comes on stdin. */
export async function runInChroot(root: string, script: string, step: string, work: Work, env: Record<string, string> = {}) {
  return withMounts(chrootMounts(root), work, () =>
    runStep(work, 'chroot', [root, '/bin/sh', '-s'], {
      step,
      input: script,
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C', ...env },
    }),
  );
}
