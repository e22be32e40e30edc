import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../lib/run.js';
import { logger } from '../lib/log.js';

// Mounts made for a chroot are always undone, also when the work inside fails:
// a leftover bind mount of /dev under a build directory is a trap for `rm -rf`.

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

export async function withMounts<T>(mounts: Mount[], work: () => Promise<T>): Promise<T> {
  const done: Mount[] = [];
  try {
    for (const m of mounts) {
      mkdirSync(m.target, { recursive: true });
      const args = [...(m.type ? ['-t', m.type] : []), ...(m.options ? ['-o', m.options] : []), m.source, m.target];
      await run('mount', args, { step: `mount ${m.target}` });
      done.push(m);
    }
    return await work();
  } finally {
    for (const m of done.reverse()) await unmount(m.target);
  }
}

export async function unmount(target: string): Promise<void> {
  try {
    await run('umount', [target], { step: `unmount ${target}` });
  } catch (err) {
    logger('build').warn({ target, err: String(err) }, 'unmount failed; detaching lazily');
    await run('umount', ['-l', target], { step: `unmount ${target}` });
  }
}

/** Runs a shell script inside root with /proc, /sys and /dev mounted; the script comes on stdin. */
export async function runInChroot(root: string, script: string, step: string, env: Record<string, string> = {}) {
  return withMounts(chrootMounts(root), () =>
    run('chroot', [root, '/bin/sh', '-s'], {
      step,
      input: script,
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C', ...env },
    }),
  );
}
