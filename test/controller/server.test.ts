import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller, type Envelope } from '../../controller/controller.js';
import { localRepo } from '../../controller/repo.js';
import { startServer } from '../../controller/server.js';
import { freePort } from '../helpers/ramboot.js';

// The controller's HTTP server with a real controller following a real git repository:
// webhooks (signed or not), the JSON API, the token on actions. The commits here have an
// invalid ramboot.yaml, so a reconcile ends at the build within a second, and no machine
// is needed to see that it started.

const SECRET = 'webhook secret of the test';
const TOKEN = 'api token of the test';
let repo: string;
let ctrl: Controller;
let app: FastifyInstance;
let base: string;
const events: Envelope[] = [];

const git = (args: string[]) => execa('git', ['-c', 'user.name=Tess', '-c', 'user.email=tess@example.invalid', ...args], { cwd: repo });
async function commit(message: string): Promise<string> {
  writeFileSync(join(repo, 'ramboot.yaml'), `host: { name: nas }\ndistro: { name: gentoo }\n# ${message}\n`);
  await git(['add', '-A']);
  await git(['commit', '-q', '-m', message]);
  return (await git(['rev-parse', 'HEAD'])).stdout.trim();
}
const push = (ref = 'refs/heads/main') => Buffer.from(JSON.stringify({ ref }));
const sign = (body: Buffer, secret = SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
const post = (path: string, body: Buffer, headers: Record<string, string>) => fetch(`${base}${path}`, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': 'application/json', ...headers } });

async function until<T>(what: string, fn: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  repo = mkdtempSync(join(tmpdir(), 'ramboot-api-repo-'));
  await execa('git', ['init', '-q', '-b', 'main', repo]);
  await commit('first');
  const stateDir = mkdtempSync(join(tmpdir(), 'ramboot-api-state-'));
  const state = { dir: stateDir, images: join(stateDir, 'images'), cache: join(stateDir, 'cache'), vm: join(stateDir, 'vm') };
  ctrl = new Controller({ repo: localRepo(repo, 'main'), state, reach: () => ({}), keep: 50, emit: () => {} });
  ctrl.subscribe((e) => events.push(e));
  const port = await freePort();
  app = await startServer(ctrl, { host: '127.0.0.1', port, token: TOKEN, webhookSecret: SECRET });
  base = `http://127.0.0.1:${port}`;
  await ctrl.poll({ kind: 'start' }, true);
  await ctrl.drained();
});
afterAll(async () => {
  await app?.close();
});

describe('webhooks', () => {
  it('a bad signature or token is refused with 401 and queues nothing', async () => {
    const before = events.length;
    const c = await commit('pushed, then announced with a forged signature');
    const body = push();
    const gh = await post('/hooks/git', body, { 'x-github-event': 'push', 'x-hub-signature-256': sign(body, 'not the secret') });
    expect(gh.status).toBe(401);
    const gl = await post('/hooks/git', body, { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': 'not the secret' });
    expect(gl.status).toBe(401);
    await new Promise((r) => setTimeout(r, 500));
    expect(events.slice(before).filter((e) => e.event.kind === 'noticed' || e.event.kind === 'phase')).toEqual([]);
    expect(ctrl.history.list().some((r) => r.commit === c)).toBe(false);
    expect(ctrl.status().lastWebhook).toMatchObject({ status: 401, form: 'gitlab', result: 'refused: bad token' });
  });

  it.each([
    ['GitHub', (b: Buffer) => ({ 'x-github-event': 'push', 'x-hub-signature-256': sign(b) })],
    ['GitLab', () => ({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET })],
  ])('a good %s delivery is answered 202 and starts a reconcile of the commit the repository names, within 2 s', async (_form, headers) => {
    const c = await commit(`announced by a good webhook ${Math.random()}`);
    const before = events.length;
    const body = push();
    const t = Date.now();
    const res = await post('/hooks/git', body, headers(body) as Record<string, string>);
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ result: 'accepted' });
    const started = await until('the reconcile to start', () => events.slice(before).find((e) => e.event.kind === 'phase' && e.commit === c), 2000);
    expect(Date.now() - t).toBeLessThan(2000);
    expect(started.commit).toBe(c);
    await ctrl.drained();
    // The payload named no commit: what was reconciled is the branch as the repository says.
    expect(ctrl.history.list(1)[0]).toMatchObject({ commit: c, trigger: { kind: 'webhook' }, outcome: 'build-failed' });
  });

  it('a push to another branch is answered 202 with the reason and changes nothing', async () => {
    const body = push('refs/heads/feature');
    const res = await post('/hooks/git', body, { 'x-github-event': 'push', 'x-hub-signature-256': sign(body) });
    expect(res.status).toBe(202);
    expect((await res.json()).reason).toMatch(/refs\/heads\/feature; the controller follows refs\/heads\/main/);
  });
});

describe('the API', () => {
  it('serves status and history as JSON, with each reconcile\'s log', async () => {
    const status = await (await fetch(`${base}/api/status`)).json();
    expect(status).toMatchObject({ branch: 'main', paused: false, lastPoll: { ok: true } });
    expect(status.quarantine.length).toBeGreaterThan(0);
    const history = (await (await fetch(`${base}/api/history`)).json()) as { id: string; outcome: string; message: string }[];
    const failed = history.find((r) => r.outcome === 'build-failed')!;
    expect(failed.message).toMatch(/ramboot.yaml, line 2, key distro.name: must be one of "alpine", "debian"/);
    const log = await (await fetch(`${base}/api/history/${failed.id}/log`)).text();
    expect(log.trim().split('\n').map((l) => JSON.parse(l).kind)).toContain('reconciled');
    expect((await fetch(`${base}/api/history/nope`)).status).toBe(404);
  });

  it('every response carries the security headers', async () => {
    const res = await fetch(`${base}/api/status`);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(res.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
  });

  it('actions without the token are refused (401) and change nothing', async () => {
    expect((await fetch(`${base}/api/pause`, { method: 'POST' })).status).toBe(401);
    expect((await fetch(`${base}/api/pause`, { method: 'POST', headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect(ctrl.status().paused).toBe(false);
    expect((await fetch(`${base}/api/pause`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(202);
    expect(ctrl.status().paused).toBe(true);
    expect((await fetch(`${base}/api/resume`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(202);
    expect(ctrl.status().paused).toBe(false);
    await ctrl.drained();
  });

  it('refuses to start on a non-loopback address without a token', async () => {
    await expect(startServer(ctrl, { host: '0.0.0.0', port: await freePort(), token: '' })).rejects.toThrow(/a non-loopback address needs a token/);
  });
});
