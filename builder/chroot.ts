import { run } from '../lib/run.js';
import { runSandboxed } from './sandbox.js';
import type { Work } from './work.js';

/** Unmounts; a busy mount is detached lazily, so nothing below it is reachable through the tree. */
export async function unmount(target: string, work: Pick<Work, 'emit'>): Promise<void> {
  try {
    await run('umount', [target], { step: `unmount ${target}` });
  } catch (err) {
    work.emit({ kind: 'warn', source: 'build', message: `failed to unmount ${target} (${(err as Error).message.split('\n')[0]}); detaching it lazily` });
    await run('umount', ['-l', target], { step: `unmount ${target}` });
  }
}

/**
 * Runs a shell script with root as its / (the script comes on stdin), in the build's
 * sandbox: no view of the host, the network only when the repository asks for it
 * (build.network), an environment of its own (the builder's would leak its locale, time
 * zone, tokens and anything else into the image) and the build's umask.
 */
export function runInRoot(root: string, script: string, step: string, work: Work, opts: { network: boolean; env?: Record<string, string> }) {
  return runSandboxed(work, { root, network: opts.network, env: opts.env }, ['/bin/sh', '-s'], { step, input: script });
}
