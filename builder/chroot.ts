import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../lib/run.js';
import { BUILD_ENV, runStep, type Work } from './work.js';

// Mounts made for a chroot are always undone, also when the work inside fails or is
// interrupted: a leftover bind mount of /dev under a build directory is a trap for
// `rm -rf`, and /proc under it is a trap for anything that walks the tree.

export const CHROOT_SOURCE = import.meta.url;

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
      if (!existsSync(m.target)) {
        // A mount point made here stays in the root: its mode must not be the umask's.
        mkdirSync(m.target, { recursive: true });
        chmodSync(m.target, 0o755);
      }
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

/** Proxy settings are the one part of the builder's environment a script in the new root sees. */
const PROXY_VARS = ['http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];

/**
 * Runs a shell script inside root with /proc, /sys and /dev mounted; the script comes on
 * stdin. It gets an environment of its own (the builder's would leak its locale, time
 * zone and anything else into the image), and the build's umask.
 */
export async function runInChroot(root: string, script: string, step: string, work: Work, env: Record<string, string> = {}) {
  const proxies = Object.fromEntries(PROXY_VARS.filter((v) => process.env[v]).map((v) => [v, process.env[v]]));
  return withMounts(chrootMounts(root), work, () =>
    runStep(work, 'chroot', [root, '/bin/sh', '-s'], {
      step,
      input: script,
      extendEnv: false,
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', ...BUILD_ENV, ...proxies, ...env },
    }),
  );
}
