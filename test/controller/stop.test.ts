import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alpineConfig, localMirror, makeRepo, minimalAlpineFiles } from '../helpers/apk.js';
import { startController } from '../helpers/controller.js';
import { webhookReceiver, type StandIn } from '../helpers/forges.js';
import { freePort, tempDir } from '../helpers/ramboot.js';

// `ramboot up` stopped with SIGTERM while it builds (setup.sh sleeps): the build is
// undone, and the notices of that reconcile, its "interrupted" verdict the last, reach a
// slow webhook receiver (a local stand-in) before the process ends. A receiver that does
// not answer at all does not keep the controller from stopping.

let hook: StandIn;

beforeAll(async () => {
  hook = await webhookReceiver();
});
afterAll(async () => {
  await hook?.close();
});

/** A controller following a repository whose setup.sh never ends, with a webhook target. */
async function buildingController() {
  const files = minimalAlpineFiles(localMirror());
  // A real host: the controller boots no virtual NAS (the build never ends, nothing is deployed).
  files['ramboot.yaml'] = alpineConfig(localMirror(), `notify:\n  webhook: { url: ${hook.url}/deploys }\n`).replace('  name: alpine-test\n', '  name: alpine-test\n  address: 127.0.0.1\n  port: 1\n');
  files['setup.sh'] = ['#!/bin/sh\nset -e\necho "setup.sh runs"\nsleep 600\n', 0o755];
  const repo = makeRepo(files);
  const work = tempDir('stop');
  const ctrl = await startController(['--repo', repo], { state: join(work, 'state'), listen: await freePort(), env: { HOME: work, RAMBOOT_IDENTITY: '' }, logFile: join(work, 'controller.log') });
  await ctrl.waitStatus('setup.sh to run', 5 * 60_000, () => readFileSync(ctrl.log, 'utf8').includes('running setup.sh'));
  return ctrl;
}

describe('ramboot up stopped by SIGTERM during a build', () => {
  it('delivers the reconcile\'s notices, "interrupted" last, to a slow receiver before it exits', async () => {
    // Slower than the build's cleanup: without the grace the process ends before the verdict is sent.
    hook.slow(4_000);
    hook.received.length = 0;
    const ctrl = await buildingController();
    await ctrl.kill('SIGTERM');
    expect(hook.received.map((r) => r.json.event)).toEqual(['deploy.started', 'deploy.verdict']);
    const [started, verdict] = hook.received.map((r) => r.json);
    expect(verdict).toMatchObject({ reconcile: started!.reconcile, outcome: 'interrupted', state: 'pending' });
    expect(ctrl.proc.exitCode).toBe(143);
  }, 3 * 60_000);

  it('does not wait longer than its grace for a receiver that never answers', async () => {
    hook.slow(10 * 60_000);
    const ctrl = await buildingController();
    // Waiting for the receiver (six tries of 10 s, minutes of backoff) would outlast the
    // test's timeout: the controller gives up after its grace and exits by itself.
    await ctrl.kill('SIGTERM');
    expect(ctrl.proc.exitCode).toBe(143);
  }, 3 * 60_000);
});
