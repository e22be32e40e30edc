import { statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  Journal,
  acquireLock,
  decideStart,
  groupDeploys,
  parseJournal,
  type DeployPlan,
  type Entry,
  type JournalRecord,
  type Step,
} from '../../deploy/journal.js';
import { REASON, VERDICT, type Verdict } from '../../deploy/verdict.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ramboot-journal-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const plan = (buildId: string, commit = `c-${buildId}`): DeployPlan => ({
  host: 'nas',
  buildId,
  commit,
  imageDir: `/images/${buildId}`,
  imageBytes: 100,
  candidate: { buildId, kernel: 'boot/ramboot/k.vmlinuz', initrds: [], append: '' },
  files: [],
  hostKey: 'ssh-ed25519 AAAA',
  previousHostKeys: [],
  medium: '/media/usb',
  health: { deadline: 1000, checks: [] },
  trial: { confirm_timeout: 2000, reboot_deadline: 1000 },
});

const outcome = (verdict: Verdict) => ({ verdict, reason: REASON.HEALTHY, message: verdict });

/** A deploy that recorded `steps` after its start (and a verdict if given). */
function history(id: string, buildId: string, steps: Step[], verdict?: Verdict): JournalRecord[] {
  const entry = (step: Step): Entry => {
    switch (step) {
      case 'start':
        return { step, plan: plan(buildId) };
      case 'label':
        return { step, slots: {}, bytesSent: 0 };
      case 'reboot':
        return { step, bootId: 'b0' };
      case 'verify':
        return { step, previousBootId: 'b0' };
      case 'health':
      case 'confirm':
        return { step, bootId: 'b1' };
      case 'promote':
        return { step, slots: {} };
      case 'disarm':
      case 'rollback':
      case 'cleanup':
        return { step, outcome: outcome(VERDICT.NOT_HEALTHY) };
      case 'verdict':
        return { step, outcome: outcome(verdict!), buildId, commit: `c-${buildId}` };
      default:
        return { step } as Entry;
    }
  };
  const all: Step[] = ['start', ...steps, ...(verdict ? ['verdict' as const] : [])];
  return all.map((s, i) => ({ ...entry(s), ts: `2024-01-01T00:00:0${i}Z`, deploy: id }) as JournalRecord);
}

describe('decideStart', () => {
  // [name, journal, requested build, force, expected decision, deploy it concerns]
  const table: [string, JournalRecord[], string, boolean, string, string | undefined][] = [
    ['empty journal', [], 'x', false, 'fresh', undefined],
    ['last deploy finished', history('d1', 'a', ['upload'], VERDICT.PROMOTED), 'x', false, 'fresh', undefined],
    ['killed during upload, same build', history('d1', 'x', ['upload']), 'x', false, 'resume', 'd1'],
    ['killed during upload, newer build', history('d1', 'a', ['upload']), 'x', false, 'supersede', 'd1'],
    ['killed after arming, newer build', history('d1', 'a', ['upload', 'label', 'arm']), 'x', false, 'supersede', 'd1'],
    ['killed after the reboot, newer build', history('d1', 'a', ['upload', 'label', 'arm', 'reboot']), 'x', false, 'resume', 'd1'],
    ['killed during health, newer build', history('d1', 'a', ['upload', 'label', 'arm', 'reboot', 'verify', 'health']), 'x', false, 'resume', 'd1'],
    ['killed during promotion', history('d1', 'x', ['upload', 'label', 'arm', 'reboot', 'verify', 'health', 'confirm', 'promote']), 'x', false, 'resume', 'd1'],
    ['killed while disarming, newer build', history('d1', 'a', ['upload', 'disarm']), 'x', false, 'resume', 'd1'],
    ['killed during rollback', history('d1', 'x', ['upload', 'label', 'arm', 'reboot', 'verify', 'health', 'rollback']), 'x', false, 'resume', 'd1'],
    ['rolled back (not healthy) before', history('d1', 'x', ['rollback', 'cleanup'], VERDICT.NOT_HEALTHY), 'x', false, 'refuse', 'd1'],
    ['rolled back (unreachable) before', history('d1', 'x', ['rollback', 'cleanup'], VERDICT.UNREACHABLE), 'x', false, 'refuse', 'd1'],
    ['rolled back before, forced', history('d1', 'x', ['rollback', 'cleanup'], VERDICT.NOT_HEALTHY), 'x', true, 'fresh', undefined],
    ['an upload failure does not block a retry', history('d1', 'x', ['upload', 'disarm'], VERDICT.UPLOAD_FAILED), 'x', false, 'fresh', undefined],
    [
      'a rolled-back build stays refused after later deploys',
      [...history('d1', 'x', ['rollback'], VERDICT.NOT_HEALTHY), ...history('d2', 'y', [], VERDICT.PROMOTED)],
      'x',
      false,
      'refuse',
      'd1',
    ],
  ];
  it.each(table)('%s', (_name, records, buildId, force, kind, concerns) => {
    const d = decideStart(groupDeploys(records), { buildId, force });
    expect(d.kind).toBe(kind);
    expect('deploy' in d ? d.deploy.id : undefined).toBe(concerns);
  });

  it('refuses a commit that was rolled back even when it builds to another id', () => {
    const d = decideStart(groupDeploys(history('d1', 'x', ['rollback'], VERDICT.NOT_HEALTHY)), { buildId: 'x2', commit: 'c-x' });
    expect(d.kind).toBe('refuse');
  });

  it('resumes at the last recorded step', () => {
    const d = decideStart(groupDeploys(history('d1', 'x', ['upload', 'label', 'arm', 'reboot', 'verify'])), { buildId: 'x' });
    expect(d.kind === 'resume' && d.deploy.last.step).toBe('verify');
  });
});

describe('journal file', () => {
  it('appends durable lines and reads them back grouped by deploy', async () => {
    const j = await Journal.open(dir);
    await j.record('d1', { step: 'start', plan: plan('a') });
    await j.record('d1', { step: 'verdict', outcome: outcome(VERDICT.PROMOTED), buildId: 'a', hostKey: 'ssh-ed25519 KEY' });
    await j.record('d2', { step: 'start', plan: plan('b') });
    const again = await Journal.open(dir);
    expect(again.deploys().map((d) => [d.id, d.entries.length, !!d.verdict])).toEqual([
      ['d1', 2, true],
      ['d2', 1, false],
    ]);
    expect(again.open()?.id).toBe('d2');
    expect(again.lastVerdict()?.buildId).toBe('a');
    expect(again.lastPromotedHostKey()).toBe('ssh-ed25519 KEY');
  });

  it('drops a last line cut by a crash, so the next record starts on a line of its own', async () => {
    const j = await Journal.open(dir);
    await j.record('d1', { step: 'start', plan: plan('a') });
    await writeFile(j.file, `${await readFile(j.file, 'utf8')}{"ts":"2024-01-01","deploy":"d1","st`);
    const again = await Journal.open(dir);
    expect(again.deploys()[0]!.entries).toHaveLength(1);
    await again.record('d1', { step: 'upload' });
    expect((await Journal.open(dir)).deploys()[0]!.last.step).toBe('upload');
  });

  it('under umask 022 the journal, its lock and a state directory it makes are 0600 and 0700', async () => {
    const umask = process.umask(0o022);
    try {
      const state = join(dir, 'state');
      const j = await Journal.open(state);
      await j.record('d1', { step: 'start', plan: plan('a') });
      const release = acquireLock(state, 'nas');
      const modes = [state, j.file, join(state, 'deploy.lock')].map((f) => statSync(f).mode & 0o777);
      release();
      expect(modes).toEqual([0o700, 0o600, 0o600]);
    } finally {
      process.umask(umask);
    }
  });

  it('refuses a journal damaged in the middle', () => {
    expect(() => parseJournal('{"a":1}\nnot json\n{"b":2}\n', 'j.jsonl')).toThrow(/failed to read deploy journal j.jsonl: line 2 is not JSON/);
  });
});

describe('deploy lock', () => {
  it('lets one deploy per host run and takes over a lock whose owner died', async () => {
    await Journal.open(dir);
    const release = acquireLock(dir, 'nas');
    release();
    await writeFile(join(dir, 'deploy.lock'), '999999999\n');
    const again = acquireLock(dir, 'nas');
    again();
    await writeFile(join(dir, 'deploy.lock'), `${process.ppid}\n`);
    expect(() => acquireLock(dir, 'nas')).toThrow(new RegExp(`process ${process.ppid} is deploying to it`));
  });
});
