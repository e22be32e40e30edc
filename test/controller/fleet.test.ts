import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FleetStatus } from '../../controller/fleet.js';
import type { ReconcileRecord } from '../../controller/history.js';
import { rollOut, type MachineResult } from '../../controller/rollout.js';
import { Journal } from '../../deploy/journal.js';
import { REASON } from '../../deploy/verdict.js';
import { parseConfigLayers, parseRepositorySettings } from '../../lib/config.js';
import { commitAll, git, keyedAlpineRepo, writeFiles } from '../helpers/apk.js';
import { startController, type RunningController } from '../helpers/controller.js';
import { freePort, ramboot, tempDir } from '../helpers/ramboot.js';

// `ramboot up` on a repository of several machines: one branch, each commit rolled out
// canary-first. The rollout's order and stop rule alone, then the real controller on a
// real repository of two machines (builds of the minimal Alpine repository from the local
// mirror). Their address is one where nothing listens: the canary's deploy cannot connect
// (try again later) or its build fails, which is what decides whether the other machine is
// reached. The end-to-end tests deploy to two virtual NASes.

describe('the rollout order: the canary alone, then the others, `parallel` at a time', () => {
  const run = async (machines: string[], settings: { canary?: string; parallel: number }, fails: string[] = [], ms: Record<string, number> = {}) => {
    const log: string[] = [];
    const r = await rollOut(machines, settings, async (m): Promise<MachineResult> => {
      log.push(`start ${m}`);
      await new Promise((done) => setTimeout(done, ms[m] ?? 5));
      log.push(`end ${m}`);
      return { machine: m, ok: !fails.includes(m), outcome: fails.includes(m) ? 'trial-not-healthy' : 'promoted', message: '' };
    });
    return { ...r, log };
  };

  it('runs the canary alone first, then the others in name order, one at a time by default', async () => {
    const r = await run(['c', 'a', 'b'], { canary: 'b', parallel: 1 });
    expect(r.log).toEqual(['start b', 'end b', 'start a', 'end a', 'start c', 'end c']);
    expect(r.notReached).toEqual([]);
  });

  it('with parallel 2, two machines after the canary run at once', async () => {
    const r = await run(['a', 'b', 'c', 'd'], { canary: 'd', parallel: 2 }, [], { a: 50, b: 10, c: 10 });
    expect(r.log.slice(0, 4)).toEqual(['start d', 'end d', 'start a', 'start b']);
    expect(r.log.indexOf('start c')).toBeLessThan(r.log.indexOf('end a'));
  });

  it('a canary that fails stops the rollout: no other machine is started', async () => {
    const r = await run(['a', 'b', 'c'], { canary: 'b', parallel: 2 }, ['b']);
    expect(r.log).toEqual(['start b', 'end b']);
    expect(r.stoppedBy?.machine).toBe('b');
    expect(r.notReached).toEqual(['a', 'c']);
  });

  it('without a canary, a machine that fails: those already started finish, no new one starts', async () => {
    const r = await run(['a', 'b', 'c', 'd'], { parallel: 2 }, ['a'], { a: 5, b: 40 });
    expect(r.log).toEqual(['start a', 'start b', 'end a', 'end b']);
    expect(r.notReached).toEqual(['c', 'd']);
  });

  it('a failure that needs a person outranks one to try again later, whichever ends first', async () => {
    const r = await rollOut(['a', 'b', 'c'], { parallel: 2 }, async (m) => {
      await new Promise((done) => setTimeout(done, m === 'a' ? 5 : 30));
      return m === 'a' ? { machine: m, ok: false, retry: true, outcome: 'retry-later', message: '' } : { machine: m, ok: false, outcome: 'trial-not-healthy', message: '' };
    });
    expect(r.stoppedBy).toMatchObject({ machine: 'b', outcome: 'trial-not-healthy' });
    expect(r.notReached).toEqual(['c']);
  });

  it('a newer commit waiting stops the rollout before the next machine, with none failed', async () => {
    let pending = false;
    const started: string[] = [];
    const r = await rollOut(['a', 'b', 'c'], { canary: 'a', parallel: 1 }, async (m) => {
      started.push(m);
      pending = true;
      return { machine: m, ok: true, outcome: 'promoted', message: '' };
    }, () => pending);
    expect(started).toEqual(['a']);
    expect(r.stoppedBy).toBeUndefined();
    expect(r.notReached).toEqual(['b', 'c']);
  });

  it('a canary the repository does not describe is an error naming the machines', async () => {
    await expect(rollOut(['a', 'b'], { canary: 'x', parallel: 1 }, async () => ({ machine: '', ok: true, outcome: '', message: '' }))).rejects.toThrow(
      /rollout.canary \(ramboot.yaml\) names machine "x", which the repository does not describe; its machines are a, b/,
    );
  });

  it('the repository\'s settings come from its own ramboot.yaml alone, with the file and line of a problem', () => {
    expect(parseRepositorySettings('host: { name: x }\nrollout:\n  canary: b\n').rollout).toEqual({ canary: 'b', parallel: 1 });
    expect(() => parseRepositorySettings('rollout:\n  parallel: 0\n')).toThrow(/^ramboot.yaml, line 2, key rollout.parallel: /);
  });

  it('watch and rollout are the repository\'s: a machine\'s ramboot.yaml that sets them is refused at its line', () => {
    expect(() => parseConfigLayers([
      { text: 'host: { name: nas }\ndistro: { name: alpine }\n', file: 'ramboot.yaml' },
      { text: 'host: { name: b }\nrollout:\n  parallel: 3\n', file: 'machines/b/ramboot.yaml' },
    ])).toThrow(/^machines\/b\/ramboot.yaml, line 2, key rollout: is set for the whole repository: move it to the top-level ramboot.yaml/);
  });
});

describe('ramboot up on a repository of two machines (canary b), nothing listening at their address', () => {
  let repo: string;
  let env: Record<string, string>;
  let state: string;
  let c: RunningController;
  const get = async <T>(path: string): Promise<T> => (await (await fetch(`${c.api}${path}`)).json()) as T;
  const historyOf = (m: string) => get<ReconcileRecord[]>(`/machines/${m}/api/history`);
  const fleet = () => get<FleetStatus>('/api/status');
  const head = () => git(repo, 'rev-parse', 'HEAD').trim();

  beforeAll(async () => {
    const key = join(tempDir('fleet-key'), 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    ({ repo, env } = await keyedAlpineRepo((config) => {
      config.host = { name: 'shared', address: '127.0.0.1', port: 1, identity: key };
      config.rollout = { canary: 'b' };
    }));
    writeFiles(repo, {
      'machines/a/ramboot.yaml': 'host:\n  name: nas-a\n',
      'machines/a/root/etc/motd': 'machine a\n',
      'machines/b/ramboot.yaml': 'host:\n  name: nas-b\n',
    });
    commitAll(repo, 'two machines, b the canary');
    state = tempDir('fleet-state');
    c = await startController(['--repo', repo], { state, listen: await freePort(), env, logFile: join(state, 'up.log') });
  }, 10 * 60_000);

  afterAll(async () => {
    if (c) await c.kill('SIGTERM');
  });

  it('starts with the canary: its deploy cannot connect, so the rollout waits to try again and the other machine is not reached', async () => {
    const commit = await head();
    const s = await c.waitStatus('the first rollout to stop', 5 * 60_000, (f) => !!(f as unknown as FleetStatus).rollout?.endedAt);
    const f = s as unknown as FleetStatus;
    expect(f.rollout).toMatchObject({ commit, stoppedBy: 'b', notReached: ['a'] });
    expect(f.rollout!.machines).toEqual([expect.objectContaining({ machine: 'b', outcome: 'retry-later' })]);
    expect(f.retry?.commit).toBe(commit);
    expect(f.machines.map((m) => m.machine).sort()).toEqual(['a', 'b']);
    const [b] = await historyOf('b');
    expect(b).toMatchObject({ commit, outcome: 'retry-later' });
    expect(b!.message).toMatch(/nas-b|127\.0\.0\.1/);
    // Nothing was recorded on a, and nothing is quarantined: the rollout is tried again.
    expect(await historyOf('a')).toEqual([]);
    expect(f.machines.every((m) => m.quarantine.length === 0)).toBe(true);
  }, 6 * 60_000);

  it('a commit whose canary does not build: the canary records the failure, the other machine records the rollout stopped there, both quarantine it', async () => {
    writeFiles(repo, { 'machines/b/ramboot.yaml': 'host:\n  name: nas-b\n  prot: 22\n' });
    commitAll(repo, 'a typo on the canary');
    const commit = await head();
    const a = await waitRecord('a', commit);
    const b = (await historyOf('b')).find((r) => r.commit === commit)!;
    expect(b).toMatchObject({ outcome: 'build-failed' });
    expect(b.message).toMatch(/machines\/b\/ramboot.yaml, line 3, key host.prot: unknown key/);
    expect(a).toMatchObject({ outcome: 'rollout-stopped', reason: 'RolloutStopped' });
    expect(a.message).toMatch(new RegExp(`^the rollout of ${commit.slice(0, 12)} stopped at machine b \\(build-failed: build failed: machines/b/ramboot.yaml, line 3.*\\); a was not touched \\(quarantined`));
    const f = await fleet();
    expect(f.rollout).toMatchObject({ commit, stoppedBy: 'b', notReached: ['a'] });
    for (const m of f.machines) expect(m.quarantine.map((q) => q.commit)).toContain(commit);
    // Asked again, the commit is not rolled out: it is quarantined.
    const again = await fetch(`${c.api}/api/reconcile`, { method: 'POST', headers: { authorization: `Bearer ${c.token()}` } });
    expect(((await again.json()) as { queued: string }).queued).toBe('quarantined');
  }, 6 * 60_000);

  it('the history verb, the pages and /metrics show each machine', async () => {
    const commit = await head();
    const h = await ramboot(['history', '--repo', repo, '--state', state, '--machine', 'a', '--json'], env);
    expect(h.exitCode, h.stderr).toBe(0);
    expect(JSON.parse(h.stdout)[0]).toMatchObject({ commit, outcome: 'rollout-stopped' });
    const index = await (await fetch(`${c.api}/`)).text();
    expect(index).toContain('href="/machines/a/"');
    expect(index).toContain('href="/machines/b/"');
    expect(index).toMatch(/Rollout of <code[^>]*>[0-9a-f]{12}<\/code> <span class="badge warn">.*stopped at b/);
    const page = await (await fetch(`${c.api}/machines/a/`)).text();
    expect(page).toContain('data-base="/machines/a"');
    expect(page).toContain('rollout stopped');
    const id = (await historyOf('a'))[0]!.id;
    expect((await fetch(`${c.api}/machines/a/history/${id}`)).status).toBe(200);
    const metrics = await (await fetch(`${c.api}/metrics`)).text();
    expect(metrics).toMatch(/^ramboot_reconciles_total\{machine="a",outcome="rollout-stopped"\} 1$/m);
    expect(metrics).toMatch(/^ramboot_reconciles_total\{machine="b",outcome="build-failed"\} 1$/m);
    expect(metrics).toMatch(/^ramboot_quarantined_commits\{machine="a"\} 1$/m);
    expect(metrics).toMatch(/^ramboot_paused 0$/m);
  });

  it('release lifts the quarantine on every machine and rolls the commit out again', async () => {
    const commit = await head();
    const r = await fetch(`${c.api}/api/release/${commit}`, { method: 'POST', headers: { authorization: `Bearer ${c.token()}` } });
    expect(r.status).toBe(202);
    expect(((await r.json()) as { released: unknown[] }).released).toHaveLength(2);
    // Released, it is tried again on the canary first (and fails there again, the same way).
    const again = await c.waitStatus('the released commit rolled out again', 2 * 60_000, (s) => {
      const f = s as unknown as FleetStatus;
      return f.rollout?.commit === commit && !!f.rollout.endedAt && f.machines.every((m) => m.quarantine.length === 1) && f.rollout.startedAt > new Date(Date.now() - 60_000).toISOString();
    });
    expect((again as unknown as FleetStatus).rollout?.machines.map((m) => m.machine)).toEqual(['b']);
  }, 3 * 60_000);

  it('a commit that changes only machine a\'s files is no change on b, which runs a build with the same inputs: recorded, not deployed', async () => {
    writeFiles(repo, { 'machines/b/ramboot.yaml': 'host:\n  name: nas-b\n' });
    commitAll(repo, 'the typo fixed');
    const fixed = await head();
    await c.waitStatus('the fixed commit tried on the canary', 3 * 60_000, (s) => (s as unknown as FleetStatus).rollout?.commit === fixed && !!(s as unknown as FleetStatus).rollout?.endedAt);
    const built = (await historyOf('b')).find((r) => r.commit === fixed)!;
    expect(built.buildId).toBeTruthy();
    // b runs that build now, as a promotion writes it into its journal (nothing listens at its address).
    const journal = await Journal.open(join(state, 'machines', 'b'));
    await journal.record(`deploy-${built.buildId}`, { step: 'verdict', buildId: built.buildId, commit: fixed, outcome: { verdict: 'promoted', reason: REASON.HEALTHY, message: 'promoted' } });
    writeFiles(repo, { 'machines/a/root/etc/only-a': 'machine a only\n' });
    commitAll(repo, 'a change to machine a only');
    const onlyA = await head();
    const b = await waitRecord('b', onlyA);
    expect(b).toMatchObject({ outcome: 'promoted', reason: 'NoChange' });
    expect(b.message).toMatch(new RegExp(`^nothing changes on b: build ${onlyA.slice(0, 8)}-${built.buildId!.split('-')[1]} has the inputs of build ${built.buildId}, which it runs; not deployed`));
    // The rollout goes on to a, whose build did change (and which cannot be reached).
    expect((await waitRecord('a', onlyA)).outcome).toBe('retry-later');
  }, 6 * 60_000);

  async function waitRecord(machine: string, commit: string): Promise<ReconcileRecord> {
    const end = Date.now() + 5 * 60_000;
    for (;;) {
      const r = (await historyOf(machine)).find((x) => x.commit === commit && x.state === 'done');
      if (r) return r;
      if (Date.now() > end) throw new Error(`no record of ${commit} on ${machine}`);
      await new Promise((done) => setTimeout(done, 500));
    }
  }
});
