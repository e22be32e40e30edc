import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OutcomeName, ReconcileRecord } from '../../controller/history.js';
import { REASON, type Reason } from '../../deploy/verdict.js';
import { parsePrometheus, sampleValue, type Family } from '../helpers/prometheus.js';
import { INVALID_YAML, VALID_YAML, phasesOf, startViews, type ViewsUnderTest } from '../helpers/views.js';

// /metrics of a real controller, read with the Prometheus project's text-format parser
// (its Python client's): every family well-formed and named by Prometheus' conventions, and the counters moving with each verdict: a real build failure, and a
// promotion, a rollback and a superseded commit replayed through the controller.

const SECRET = 'forge-webhook-secret-plaintext-K1xq';
let v: ViewsUnderTest;
let a: string;

const scrape = async (): Promise<Family[]> => {
  const res = await fetch(`${v.base}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
};
const value = sampleValue;

function replay(commit: string, outcome: OutcomeName, reason: Reason, verdict?: string): ReconcileRecord {
  const record = v.save({ commit, state: 'running', ...phasesOf(0, [['queued', 0.1], ['build', 3], ['upload', 2], ['reboot', 60], ['health', 5]]), outcome: undefined });
  if (verdict) v.emit({ kind: 'verdict', outcome: { verdict: verdict as never, reason: reason as never, message: `${outcome} after the trial` } }, record);
  Object.assign(record, { state: 'done', outcome, reason, message: `${outcome} after the trial` });
  v.ctrl.history.save(record);
  v.emit({ kind: 'reconciled', source: 'controller', reconcile: record.id, commit, outcome, message: record.message! }, record);
  return record;
}

beforeAll(async () => {
  v = await startViews({ webhookSecret: SECRET });
  a = await v.commit('nginx: serve the photo share', VALID_YAML());
  await v.promote(a, `${a.slice(0, 8)}-0badcafe`);
});
afterAll(async () => {
  await v?.close();
});

describe('/metrics', () => {
  it('parses as Prometheus text, every name and type by the conventions', async () => {
    const fams = await scrape();
    const ours = fams.filter((f) => f.name.startsWith('ramboot_'));
    expect(ours.map((f) => `${f.name} ${f.type}`).sort()).toEqual([
      'ramboot_controller_info gauge',
      'ramboot_deploys counter',
      'ramboot_last_poll_success gauge',
      'ramboot_last_poll_timestamp_seconds gauge',
      'ramboot_last_success_timestamp_seconds gauge',
      'ramboot_last_webhook_timestamp_seconds gauge',
      'ramboot_notifications counter',
      'ramboot_paused gauge',
      'ramboot_phase_duration_seconds histogram',
      'ramboot_polls counter',
      'ramboot_quarantined_commits gauge',
      'ramboot_reconcile_in_progress gauge',
      'ramboot_reconciles counter',
      'ramboot_running_build_info gauge',
      'ramboot_trial_in_progress gauge',
      'ramboot_webhook_deliveries counter',
    ]);
    for (const f of ours) {
      expect(f.name, f.name).toMatch(/^ramboot_[a-z0-9_]+$/);
      expect(f.help, f.name).not.toBe('');
      // Counters are exposed as <family>_total; a gauge never ends in _total.
      if (f.type === 'counter') for (const s of f.samples) expect(s.name).toBe(`${f.name}_total`);
      else expect(f.name).not.toMatch(/_total$/);
      if (f.name.endsWith('_info')) for (const s of f.samples) expect(s.value, f.name).toBe(1);
      if (/timestamp|duration/.test(f.name)) expect(f.name).toMatch(/_seconds$/);
    }
    // Every known label value is there from the start.
    for (const outcome of ['promoted', 'build-failed', 'trial-not-healthy', 'superseded', 'retry-later']) expect(value(fams, 'ramboot_reconciles_total', { outcome })).toBe(0);
    expect(value(fams, 'ramboot_deploys_total', { verdict: 'trial-unreachable' })).toBe(0);
    expect(value(fams, 'ramboot_phase_duration_seconds_count', { phase: 'health' })).toBe(0);
    expect(value(fams, 'ramboot_running_build_info', { build: `${a.slice(0, 8)}-0badcafe`, commit: a })).toBe(1);
    expect(value(fams, 'ramboot_controller_info')).toBe(1);
    // The process metrics every Node exporter has.
    expect(fams.some((f) => f.name === 'process_resident_memory_bytes')).toBe(true);
  });

  it('its counters move with each verdict', async () => {
    const before = await scrape();
    const d = (after: Family[], name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels);

    // A real reconcile: the branch is looked at, the build fails on ramboot.yaml, the commit is quarantined.
    await v.commit('try gentoo', INVALID_YAML('b'));
    await v.ctrl.poll({ kind: 'manual' }, true);
    await v.ctrl.drained();
    let after = await scrape();
    expect(d(after, 'ramboot_reconciles_total', { outcome: 'build-failed' })).toBe(1);
    expect(d(after, 'ramboot_polls_total', { result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(d(after, 'ramboot_phase_duration_seconds_count', { phase: 'build' })).toBe(1);
    expect(d(after, 'ramboot_quarantined_commits')).toBe(1);
    expect(value(after, 'ramboot_last_poll_success')).toBe(1);
    expect(Math.abs(value(after, 'ramboot_last_poll_timestamp_seconds') - Date.now() / 1000)).toBeLessThan(30);
    expect(d(after, 'ramboot_deploys_total', { verdict: 'promoted' })).toBe(0);

    // A promotion and a rollback, as a deploy reports them; a commit superseded in the queue.
    replay(a, 'promoted', REASON.HEALTHY, 'promoted');
    replay(a, 'trial-not-healthy', REASON.CHECK_FAILED, 'trial-not-healthy');
    v.emit({ kind: 'superseded', source: 'controller', commit: a, by: a });
    after = await scrape();
    expect(d(after, 'ramboot_reconciles_total', { outcome: 'promoted' })).toBe(1);
    expect(d(after, 'ramboot_reconciles_total', { outcome: 'trial-not-healthy' })).toBe(1);
    expect(d(after, 'ramboot_reconciles_total', { outcome: 'superseded' })).toBe(1);
    expect(d(after, 'ramboot_deploys_total', { verdict: 'promoted' })).toBe(1);
    expect(d(after, 'ramboot_deploys_total', { verdict: 'trial-not-healthy' })).toBe(1);
    expect(d(after, 'ramboot_phase_duration_seconds_count', { phase: 'reboot' })).toBe(2);
    // Each reboot took 60 s: in the 60 s bucket, not the 30 s one.
    expect(d(after, 'ramboot_phase_duration_seconds_bucket', { phase: 'reboot', le: '30' })).toBe(0);
    expect(d(after, 'ramboot_phase_duration_seconds_bucket', { phase: 'reboot', le: '60' })).toBe(2);
    expect(Math.abs(value(after, 'ramboot_last_success_timestamp_seconds') - Date.now() / 1000)).toBeLessThan(30);
    expect(value(after, 'ramboot_trial_in_progress')).toBe(0);
    expect(value(after, 'ramboot_reconcile_in_progress')).toBe(0);

    // Webhook deliveries, by what became of them.
    const body = Buffer.from(JSON.stringify({ ref: 'refs/heads/main' }));
    const deliver = (signature: string) => fetch(`${v.base}/hooks/git`, { method: 'POST', body, headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': signature } });
    expect((await deliver('sha256=00')).status).toBe(401);
    expect((await deliver(`sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`)).status).toBe(202);
    await v.ctrl.drained();
    after = await scrape();
    expect(d(after, 'ramboot_webhook_deliveries_total', { result: 'refused' })).toBe(1);
    expect(d(after, 'ramboot_webhook_deliveries_total', { result: 'accepted' })).toBe(1);
    expect(Math.abs(value(after, 'ramboot_last_webhook_timestamp_seconds') - Date.now() / 1000)).toBeLessThan(30);
    await v.ctrl.drained();
  });

  it('a poll that fails is counted and said', async () => {
    const before = await scrape();
    await v.git(['branch', '-m', 'main', 'elsewhere']);
    try {
      expect((await v.ctrl.poll({ kind: 'poll' })).error).toMatch(/no such branch/);
      const after = await scrape();
      expect(value(after, 'ramboot_polls_total', { result: 'error' }) - value(before, 'ramboot_polls_total', { result: 'error' })).toBe(1);
      expect(value(after, 'ramboot_last_poll_success')).toBe(0);
    } finally {
      await v.git(['branch', '-m', 'elsewhere', 'main']);
    }
  });
});
