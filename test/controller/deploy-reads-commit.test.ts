import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { Journal } from '../../deploy/journal.js';
import { keyedAlpineRepo } from '../helpers/apk.js';
import { ramboot, tempDir } from '../helpers/ramboot.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

// What deploys is what was committed: `ramboot deploy` builds the commit and deploys it
// with the commit's ramboot.yaml (health checks, trial timings, boot medium), carried in
// the image. A change in the working tree that is not committed changes nothing. The
// machine is a local sshd standing in for the NAS; the deploy stops at its host key
// (it is not the image's), after the journal recorded the plan.

let sshd: TestSshd;
let repo: string;
let state: string;
let env: Record<string, string>;

beforeAll(async () => {
  sshd = await startSshd();
  ({ repo, env } = await keyedAlpineRepo((config) => {
    config.health = { deadline: '2m', checks: [{ name: 'committed check', cmd: 'true' }] };
  }));
  state = tempDir('commit-state');
}, 10 * 60_000);

afterAll(async () => {
  await sshd?.stop();
});

describe('deploy reads only the image, which carries the commit\'s settings', () => {
  it('uses the committed health checks, not the working tree\'s uncommitted ones', async () => {
    const file = join(repo, 'ramboot.yaml');
    const config = parse(readFileSync(file, 'utf8'));
    config.health.checks = [{ name: 'uncommitted check', cmd: 'false' }];
    config.trial = { confirm_timeout: '1m', reboot_deadline: '1m' };
    writeFileSync(file, stringify(config));
    const r = await ramboot(['deploy', '--repo', repo, '--state', state, '--address', '127.0.0.1', '--port', String(sshd.port), '--ssh-key', sshd.clientKey], env);
    expect(r.exitCode, r.stderr).toBe(11);
    expect(r.stdout).toMatch(/host key mismatch/);
    const plan = (await Journal.open(state)).deploys().at(-1)!.plan!;
    expect(plan.health.checks.map((c) => c.name)).toEqual(['committed check']);
    expect(plan.trial.confirm_timeout).toBe(600_000);
    const manifest = JSON.parse(readFileSync(join(plan.imageDir, 'manifest.json'), 'utf8'));
    expect(manifest.settings.health.checks.map((c: { name: string }) => c.name)).toEqual(['committed check']);
  }, 10 * 60_000);
});
