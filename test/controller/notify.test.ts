import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { OutcomeName, ReconcileRecord } from '../../controller/history.js';
import { REASON, type Reason } from '../../deploy/verdict.js';
import { githubStandIn, giteaStandIn, gitlabStandIn, ntfyStandIn, webhookReceiver, type Received, type StandIn } from '../helpers/forges.js';
import { INVALID_YAML, VALID_YAML, phasesOf, startViews, type ViewsUnderTest } from '../helpers/views.js';

// Notifications from a real controller to local stand-ins of GitHub's, Gitea's and
// GitLab's commit status APIs, ntfy and a webhook receiver. A promotion and a rollback
// need a machine, so they are replayed through the controller's events as its reconcile
// emits them, with their history records; a build failure is a real reconcile. Tokens
// come from a file and from the environment, and no secret appears in what is sent
// anywhere but the header of its own target, nor on the page.

const TOKENS = { github: 'ghp-plaintext-9fK2mQ7xWb', gitea: 'gitea-plaintext-L3vR8sT1', gitlab: 'glpat-plaintext-Yq4Hn6Zp', ntfy: 'tk_plaintext-ntfy-c7Jd2' };
const WEBHOOK_SECRET = 'webhook-signing-plaintext-u5Pk0e';
const FAST = { attempts: 4, firstMs: 40, maxMs: 200, timeoutMs: 3000 };

let v: ViewsUnderTest;
let gh: StandIn, gitea: StandIn, gl: StandIn, ntfy: StandIn, hook: StandIn;
let dir: string;
let a: string;
let githubToken = TOKENS.github;

/** A reconcile's build phase, as the controller's reconcile emits it: "deploy started". */
function start(commit: string, extra: Partial<ReconcileRecord> = {}): ReconcileRecord {
  const record = v.save({ commit, subject: 'nginx: serve the photo share', author: 'Tess Ter', trigger: { kind: 'webhook', detail: 'github' }, state: 'running', ...phasesOf(0, [['queued', 0.1]]), ...extra });
  record.phases.push({ name: 'build', start: new Date().toISOString() });
  v.ctrl.history.save(record);
  v.emit({ kind: 'phase', source: 'controller', reconcile: record.id, commit, phase: 'build' }, record);
  return record;
}

/** Its verdict: the record saved done, then the `reconciled` event. */
function finish(record: ReconcileRecord, outcome: OutcomeName, reason: Reason, message: string): void {
  record.phases.at(-1)!.end = new Date().toISOString();
  Object.assign(record, { state: 'done', outcome, reason, message, endedAt: new Date().toISOString() });
  v.ctrl.history.save(record);
  v.emit({ kind: 'reconciled', source: 'controller', reconcile: record.id, commit: record.commit, outcome, message }, record);
}

/** A reconcile that ran the whole way; resolves once its notifications are delivered or given up. */
async function replay(commit: string, outcome: OutcomeName, reason: Reason, message: string, extra: Partial<ReconcileRecord> = {}): Promise<ReconcileRecord> {
  const record = start(commit, extra);
  finish(record, outcome, reason, message);
  await v.notifier.idle();
  return record;
}

const statuses = (s: StandIn, commit: string) => s.received.filter((r) => r.path.endsWith(`/statuses/${commit}`)).map((r) => r.json);
const mark = () => [gh, gitea, gl, ntfy, hook].map((s) => s.received.length);
const since = (m: number[]) => [gh, gitea, gl, ntfy, hook].map((s, i) => s.received.slice(m[i]));

beforeAll(async () => {
  [gh, gitea, gl, ntfy, hook] = await Promise.all([githubStandIn(() => githubToken), giteaStandIn(() => TOKENS.gitea), gitlabStandIn(() => TOKENS.gitlab), ntfyStandIn(() => TOKENS.ntfy), webhookReceiver()]);
  dir = mkdtempSync(join(tmpdir(), 'ramboot-notify-secrets-'));
  writeFileSync(join(dir, 'github-token'), `${TOKENS.github}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'gitlab-token'), TOKENS.gitlab, { mode: 0o600 });
  writeFileSync(join(dir, 'webhook-secret'), WEBHOOK_SECRET, { mode: 0o600 });
  process.env.RAMBOOT_TEST_GITEA_TOKEN = TOKENS.gitea;
  process.env.RAMBOOT_TEST_NTFY_TOKEN = TOKENS.ntfy;
  v = await startViews({ retry: FAST });
  a = await v.commit('nginx: serve the photo share', VALID_YAML(notifySection()));
  await v.promote(a, `${a.slice(0, 8)}-0badcafe`);
});

afterAll(async () => {
  await v?.close();
  await Promise.all([gh, gitea, gl, ntfy, hook].map((s) => s?.close()));
  delete process.env.RAMBOOT_TEST_GITEA_TOKEN;
  delete process.env.RAMBOOT_TEST_NTFY_TOKEN;
});

beforeEach(() => {
  githubToken = TOKENS.github;
  writeFileSync(join(dir, 'github-token'), `${TOKENS.github}\n`);
});

describe('a promotion', () => {
  it('sets pending, then success on each forge (context ramboot/nas, a link to the history entry), and tells ntfy and the webhook', async () => {
    const before = mark();
    const r = await replay(a, 'promoted', REASON.HEALTHY, `build ${a.slice(0, 8)}-0badcafe promoted: every health check passed`);
    const link = `https://nas.example.invalid:8180/history/${r.id}`;
    const [ghs, gts, gls, ns, hs] = since(before);
    for (const s of [ghs!, gts!]) {
      expect(s.map((x) => x.json)).toEqual([
        { state: 'pending', context: 'ramboot/nas', description: `deploying ${a.slice(0, 12)} to nas: building`, target_url: link },
        { state: 'success', context: 'ramboot/nas', description: `promoted: build ${a.slice(0, 8)}-0badcafe promoted: every health check passed`, target_url: link },
      ]);
    }
    expect(ghs![0]!.path).toBe(`/repos/tess/nas/statuses/${a}`);
    expect(gts![0]!.path).toBe(`/api/v1/repos/tess/nas/statuses/${a}`);
    expect(gls!.map((x) => [x.path, x.json.state, x.json.name])).toEqual([
      [`/api/v4/projects/tess%2Fnas/statuses/${a}`, 'running', 'ramboot/nas'],
      [`/api/v4/projects/tess%2Fnas/statuses/${a}`, 'success', 'ramboot/nas'],
    ]);
    expect(ns!.map((x) => x.json)).toEqual([
      expect.objectContaining({ topic: 'nas-deploys', title: `nas: deploy started (${a.slice(0, 12)})`, priority: 2, tags: ['rocket'], click: link }),
      expect.objectContaining({ topic: 'nas-deploys', title: `nas: promoted (${a.slice(0, 12)})`, priority: 3, tags: ['white_check_mark'], click: link, message: expect.stringMatching(/^nginx: serve the photo share \(Tess Ter\)\nbuild .* promoted/) }),
    ]);
    expect(hs!.map((x) => [x.headers['x-ramboot-event'], x.json.event, x.json.outcome])).toEqual([
      ['deploy.started', 'deploy.started', undefined],
      ['deploy.verdict', 'deploy.verdict', 'promoted'],
    ]);
    expect(hs![1]!.json).toMatchObject({ machine: 'nas', context: 'ramboot/nas', reconcile: r.id, commit: a, state: 'success', reason: REASON.HEALTHY, url: link, trigger: 'webhook (github)' });
    for (const x of hs!) expect(x.headers['x-ramboot-signature']).toBe(`sha256=${createHmac('sha256', WEBHOOK_SECRET).update(x.body).digest('hex')}`);
    expect(new Set(hs!.map((x) => x.headers['x-ramboot-delivery'])).size).toBe(2);
  });

  it('an identical status is not posted again; ntfy and the webhook hear every event', async () => {
    const before = mark();
    await replay(a, 'promoted', REASON.HEALTHY, `build ${a.slice(0, 8)}-0badcafe promoted: every health check passed`);
    const [ghs, gts, , ns, hs] = since(before);
    // pending differs from the success posted last, so it is posted; the success that follows is the same as before it.
    expect(ghs!.map((x) => x.json.state)).toEqual(['pending', 'success']);
    expect(gts!.map((x) => x.json.state)).toEqual(['pending', 'success']);
    const again = mark();
    // The same verdict once more, straight after: not posted, counted as identical.
    const r = v.save({ commit: a, trigger: { kind: 'refresh' }, state: 'done', outcome: 'promoted', reason: REASON.HEALTHY, message: `build ${a.slice(0, 8)}-0badcafe promoted: every health check passed`, phases: [{ name: 'build', start: new Date().toISOString(), end: new Date().toISOString() }] });
    v.emit({ kind: 'reconciled', source: 'controller', reconcile: r.id, commit: a, outcome: 'promoted', message: r.message! }, r);
    await v.notifier.idle();
    const [gh2, gt2, gl2, n2, h2] = since(again);
    expect([gh2!.length, gt2!.length, gl2!.length]).toEqual([0, 0, 0]);
    expect([n2!.length, h2!.length]).toEqual([1, 1]);
    expect(v.notifier.state().targets.find((t) => t.kind === 'github')!.counts.identical).toBeGreaterThan(0);
    expect(ns!.length + hs!.length).toBe(4);
  });
});

describe('a rollback', () => {
  it('sets failure with the reason, cut to 140 characters, and wakes the phone', async () => {
    const b = await v.commit('nginx: proxy to the new backend', VALID_YAML(notifySection()));
    const message = 'health check "photos" failed after 3 attempts: HTTP 502 from http://127.0.0.1/photos (Bad Gateway: upstream closed the connection); rolled back to the running build (quarantined: not deployed again unless released)';
    const before = mark();
    const r = await replay(b, 'trial-not-healthy', REASON.CHECK_FAILED, message, { subject: 'nginx: proxy to the new backend' });
    const [ghs, gts, gls, ns, hs] = since(before);
    const failure = ghs!.at(-1)!.json;
    expect(failure.state).toBe('failure');
    expect([...String(failure.description)].length).toBe(140);
    expect(failure.description).toMatch(/^rolled back: trial not healthy: health check "photos" failed after 3 attempts: HTTP 502 .*…$/);
    expect(gts!.at(-1)!.json).toMatchObject({ state: 'failure', description: failure.description });
    expect(gls!.at(-1)!.json).toMatchObject({ state: 'failed', description: failure.description, target_url: `https://nas.example.invalid:8180/history/${r.id}` });
    expect(ns!.at(-1)!.json).toMatchObject({ title: `nas: rolled back: trial not healthy (${b.slice(0, 12)})`, priority: 4, tags: ['rewind'] });
    expect(ns!.at(-1)!.json.message).toContain(message);
    expect(hs!.at(-1)!.json).toMatchObject({ outcome: 'trial-not-healthy', reason: REASON.CHECK_FAILED, state: 'failure', message });
  });
});

describe('deliveries that fail', () => {
  it('a target answering 500 is retried with backoff until it takes it; the deploy still ends promoted', async () => {
    const before = mark();
    gh.failNext(2, 500);
    ntfy.failNext(1, 503);
    const r = start(a, { refresh: true, trigger: { kind: 'refresh' } });
    await v.notifier.idle();
    finish(r, 'promoted', REASON.ALREADY_RUNNING, 'the machine already runs this build');
    await v.notifier.idle();
    const [ghs, , , ns] = since(before);
    // pending was answered 500 twice and went through on the third try; then the verdict.
    expect(ghs!.map((x) => x.json.state)).toEqual(['pending', 'pending', 'pending', 'success']);
    expect(ns!.map((x) => x.json.title)).toEqual([expect.stringMatching(/deploy started/), expect.stringMatching(/deploy started/), expect.stringMatching(/promoted/)]);
    // The machine did not change: the phone is told without a sound.
    expect(ns!.at(-1)!.json.priority).toBe(1);
    expect(v.ctrl.history.get(r.id)).toMatchObject({ state: 'done', outcome: 'promoted' });
    expect(v.notifier.state().targets.find((t) => t.kind === 'github')!.last).toMatchObject({ event: 'verdict', result: 'delivered', attempts: 1 });
  });

  it('a "started" still being retried when its verdict is queued is dropped: the verdict says more', async () => {
    const before = mark();
    gh.failNext(1, 502);
    await replay(a, 'promoted', REASON.HEALTHY, 'promoted after a forge hiccup');
    const [ghs] = since(before);
    expect(ghs!.map((x) => x.json.state)).toEqual(['pending', 'success']);
    expect(v.notifier.state().targets.find((t) => t.kind === 'github')!.counts.dropped).toBe(1);
  });

  it('a target that keeps failing never holds a real reconcile; its failure is on the page and in the metrics', async () => {
    // Each answer comes after 400 ms, and is a 500: a notice takes its four attempts and ~2 s to give up.
    hook.failNext(100, 500);
    hook.slow(400);
    const c = await v.commit('try gentoo', INVALID_YAML('c'));
    const webhook = () => v.notifier.state().targets.find((x) => x.kind === 'webhook')!;
    const given = () => webhook().counts.failed + webhook().counts.dropped;
    const failedBefore = given();
    await v.ctrl.poll({ kind: 'manual' }, true);
    await v.ctrl.drained();
    // The reconcile ended (its build failed on its own ramboot.yaml) before the webhook's first notice was given up.
    expect(v.ctrl.history.list(1)[0]).toMatchObject({ commit: c, outcome: 'build-failed', state: 'done' });
    expect(given()).toBe(failedBefore);
    await v.notifier.idle();
    // The verdict was given up after its attempts; the "started" before it, dropped once the verdict was queued.
    expect(given()).toBe(failedBefore + 2);
    hook.failNext(0);
    hook.slow(0);
    // Its ramboot.yaml is invalid: the running commit's said where to notify.
    expect(statuses(gh, c).map((s) => s.state)).toEqual(['pending', 'failure']);
    expect(statuses(gh, c)[1]!.description).toMatch(/^build failed: ramboot\.yaml, line 2, key distro\.name/);
    expect(v.notifier.state().config).toMatchObject({ commit: a, note: expect.stringMatching(/the reconciled commit's ramboot\.yaml could not be read.*the running commit's was used/) });
    expect(webhook().lastFailure).toMatchObject({ result: 'failed', attempts: FAST.attempts, status: 500, error: expect.stringMatching(/answered HTTP 500/) });
    const page = await (await fetch(`${v.base}/`)).text();
    expect(page).toMatch(/<li class="failing">[\s\S]*<strong>webhook<\/strong> http:\/\/127\.0\.0\.1:\d+\/…[\s\S]*failed[\s\S]*answered HTTP 500/);
    expect(page).toMatch(/degraded[\s\S]*notifications to webhook fail/);
    const metrics = await (await fetch(`${v.base}/metrics`)).text();
    expect(metrics).toMatch(/^ramboot_notifications_total\{target="webhook",result="failed"\} [1-9]/m);
  });

  it('a refused token is not retried: the answer and what to check are kept', async () => {
    writeFileSync(join(dir, 'github-token'), 'a-revoked-token\n');
    const before = gh.received.length;
    const r = await replay(a, 'promoted', REASON.HEALTHY, 'promoted again, with a revoked token');
    const github = v.notifier.state().targets.find((x) => x.kind === 'github')!;
    expect(gh.received.length - before).toBe(2);
    expect(github.lastFailure).toMatchObject({ reconcile: r.id, attempts: 1, status: 401, error: expect.stringMatching(/answered HTTP 401: \{"message":"Bad credentials"\} \(is the token in file .*github-token valid, and allowed to set commit statuses\?\)/) });
    expect(JSON.stringify(v.notifier.state())).not.toContain('a-revoked-token');
  });

  it('the token file is read at each send: a rotated token is used at once', async () => {
    githubToken = 'ghp-rotated-plaintext-2Lp';
    writeFileSync(join(dir, 'github-token'), `${githubToken}\n`);
    const before = gh.received.length;
    await replay(a, 'promoted', REASON.HEALTHY, 'promoted with the rotated token');
    expect(gh.received.slice(before).map((x) => x.headers.authorization)).toEqual(['Bearer ghp-rotated-plaintext-2Lp', 'Bearer ghp-rotated-plaintext-2Lp']);
    expect(v.notifier.state().targets.find((x) => x.kind === 'github')!.last).toMatchObject({ result: 'delivered' });
  });
});

describe('secrets', () => {
  it('no token or signing secret appears in any notification but in the header of its own target, nor on the page, the API or the metrics', async () => {
    const own: Record<string, [StandIn, (r: Received) => string | undefined]> = {
      github: [gh, (r) => r.headers.authorization],
      gitea: [gitea, (r) => r.headers.authorization],
      gitlab: [gl, (r) => r.headers['private-token'] as string],
      ntfy: [ntfy, (r) => r.headers.authorization],
    };
    const all = [gh, gitea, gl, ntfy, hook].flatMap((s) => s.received.map((r) => ({ s, r })));
    expect(all.length).toBeGreaterThan(30);
    for (const [name, secret] of [...Object.entries(TOKENS), ['webhook', WEBHOOK_SECRET]] as [string, string][]) {
      for (const { s, r } of all) {
        const headers = Object.entries(r.headers).filter(([k]) => !(own[name]?.[0] === s && k === (name === 'gitlab' ? 'private-token' : 'authorization')));
        expect(`${r.path}\n${r.body}\n${JSON.stringify(headers)}`.includes(secret), `${name}'s secret in a request to the ${s.name}`).toBe(false);
      }
    }
    expect(own.gitlab![1](gl.received[0]!)).toBe(TOKENS.gitlab);
    const pages = ['/', '/api/status', '/api/history', '/api/notifications', '/metrics', ...v.ctrl.history.list().map((r) => `/history/${r.id}`)];
    for (const p of pages) {
      const body = await (await fetch(`${v.base}${p}`)).text();
      for (const secret of [...Object.values(TOKENS), WEBHOOK_SECRET]) expect(body.includes(secret), `a secret in ${p}`).toBe(false);
    }
    // The page names where secrets come from, never what they are.
    const page = await (await fetch(`${v.base}/`)).text();
    expect(page).toContain(`secret from file ${join(dir, 'github-token')}`);
    expect(page).toContain('secret from environment variable RAMBOOT_TEST_GITEA_TOKEN');
    expect(page).toMatch(/topic nas… on http:\/\/127\.0\.0\.1:\d+/);
  });
});

/** ramboot.yaml's notify section: every target a stand-in, tokens from files and the environment. */
function notifySection(): string {
  return `notify:
  url: https://nas.example.invalid:8180
  github: { repo: tess/nas, url: ${gh.url}, token_file: ${join(dir, 'github-token')} }
  gitea: { url: ${gitea.url}, repo: tess/nas, token_env: RAMBOOT_TEST_GITEA_TOKEN }
  gitlab: { url: ${gl.url}, project: tess/nas, token_file: ${join(dir, 'gitlab-token')} }
  webhook: { url: ${hook.url}/hooks/ramboot-deploys, secret_file: ${join(dir, 'webhook-secret')} }
  ntfy: { url: ${ntfy.url}, topic: nas-deploys, token_env: RAMBOOT_TEST_NTFY_TOKEN }
`;
}
