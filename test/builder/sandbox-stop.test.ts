import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { runSandboxed, type Sandbox } from '../../builder/sandbox.js';
import { InterruptedError } from '../../lib/errors.js';

// Ctrl-C or SIGTERM can come at any moment of a sandboxed step, also while bwrap is still
// setting the sandbox up. Whenever it comes, the step ends and nothing of the sandbox
// lives on (a survivor would hold the build's mounts, and `ramboot up`'s stop, forever).

const HOST: Sandbox = {
  binds: [{ source: '/usr', target: '/usr', readOnly: true }],
  symlinks: [
    { target: 'usr/bin', path: '/bin' },
    { target: 'usr/lib', path: '/lib' },
    { target: 'usr/lib64', path: '/lib64' },
  ],
  network: false,
};

/** A marker in the sandbox's command line, so that a survivor can be found among the host's processes. */
function survivors(marker: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(marker) && !l.includes('ps -eo'));
}

describe('a sandboxed step stopped at any moment', () => {
  it('ends, and leaves no process of the sandbox, however early in bwrap\'s start-up the stop comes', async () => {
    const marker = `ramboot-stop-${process.pid}`;
    const stuck: number[] = [];
    for (let i = 0; i < 40; i++) {
      const abort = new AbortController();
      const step = runSandboxed({ emit: () => {}, signal: abort.signal }, HOST, ['/bin/sh', '-c', `sleep 600 # ${marker}`], { step: 'sleep' });
      // From at once to well after the sandbox is up.
      setTimeout(() => abort.abort('SIGTERM'), (i % 20) * 2);
      const ended = await Promise.race([
        step.then(() => 'finished', (e) => (e instanceof InterruptedError ? 'interrupted' : String(e))),
        new Promise<string>((r) => setTimeout(() => r('still running'), 20_000)),
      ]);
      if (ended !== 'interrupted') stuck.push(i);
    }
    const left = survivors(marker);
    for (const l of left) process.kill(Number(l.trim().split(/\s+/)[0]), 'SIGKILL');
    expect({ stuck, left }).toEqual({ stuck: [], left: [] });
  }, 20 * 60_000);
});
