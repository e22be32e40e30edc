import { mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { History } from '../../controller/history.js';
import { Quarantine } from '../../controller/quarantine.js';

// The controller's history (records and logs) and quarantine are its owner's alone even
// when it runs under the usual umask 022: a build's output and a health check's can show
// what the machine holds.

let umask: number;
beforeAll(() => {
  umask = process.umask(0o022);
});
afterAll(() => {
  process.umask(umask);
});
const modeOf = (path: string) => statSync(path).mode & 0o777;

describe('state files under umask 022', () => {
  it('the history directory is 0700, its records and logs 0600', () => {
    const state = mkdtempSync(join(tmpdir(), 'ramboot-history-'));
    const history = new History(state, 10);
    const id = history.newId();
    history.save({ id, commit: 'c'.repeat(40), trigger: { kind: 'manual' }, noticedAt: new Date().toISOString(), phases: [], state: 'running' });
    history.log(id, { kind: 'stage', source: 'controller', message: 'building' });
    expect(modeOf(history.dir)).toBe(0o700);
    expect(readdirSync(history.dir).sort()).toEqual([`${id}.json`, `${id}.log`]);
    for (const name of readdirSync(history.dir)) expect(modeOf(join(history.dir, name)), name).toBe(0o600);
  });

  it('the quarantine file is 0600', () => {
    const state = mkdtempSync(join(tmpdir(), 'ramboot-quarantine-'));
    new Quarantine(state).add({ commit: 'c'.repeat(40), outcome: 'build-failed', message: 'no', at: new Date().toISOString(), reconcile: 'r' });
    expect(modeOf(join(state, 'quarantine.json'))).toBe(0o600);
  });
});
