import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller, type Envelope } from '../../controller/controller.js';
import { Metrics } from '../../controller/metrics.js';
import { Live } from '../../controller/page/live.js';
import { pageRoutes } from '../../controller/page/routes.js';
import { localRepo } from '../../controller/repo.js';
import { hostCheck, startServer } from '../../controller/server.js';
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
let port: number;
const events: Envelope[] = [];

const git = (args: string[]) => execa('git', ['-c', 'user.name=Tess', '-c', 'user.email=tess@example.invalid', ...args], { cwd: repo });
async function commit(message: string): Promise<string> {
  writeFileSync(join(repo, 'ramboot.yaml'), `host: { name: nas }\ndistro: { name: gentoo }\n# ${message}\n`);
  await git(['add', '-A']);
  await git(['commit', '-q', '-m', message]);
  return (await git(['rev-parse', 'HEAD'])).stdout.trim();
}
/** A push delivery; `after` is the commit the forge says the branch moved to. */
const push = (ref = 'refs/heads/main', after?: string) => Buffer.from(JSON.stringify({ ref, after }));
const sign = (body: Buffer, secret = SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
const post = (path: string, body: Buffer, headers: Record<string, string>) => fetch(`${base}${path}`, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': 'application/json', ...headers } });

/** A request with a Host header of the test's choosing (fetch always sends the URL's); an event stream is cut once answered. */
function withHost(method: 'GET' | 'POST', path: string, host: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...headers, host } }, (res) => {
      if (res.headers['content-type']?.startsWith('text/event-stream')) {
        res.destroy();
        return resolve({ status: res.statusCode!, body: '' });
      }
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until<T>(what: string, fn: () => T | undefined, ms = 30_000): Promise<T> {
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
  port = await freePort();
  const metrics = new Metrics();
  metrics.attach(ctrl);
  const live = new Live();
  live.attach(ctrl);
  app = await startServer(ctrl, { host: '127.0.0.1', port, token: TOKEN, webhookSecret: SECRET, routes: [pageRoutes({ host: 'nas', live }), metrics.routes()] });
  base = `http://127.0.0.1:${port}`;
  await ctrl.poll({ kind: 'start' }, true);
  await ctrl.drained();
});
afterAll(async () => {
  await app?.close();
});

describe('webhooks', () => {
  it('a bad signature or token, or none, is refused with 401, queues nothing and leaves the last webhook as it was', async () => {
    const ping = Buffer.from('{"zen":"hi"}');
    expect((await post('/hooks/git', ping, { 'x-github-event': 'ping', 'x-hub-signature-256': sign(ping) })).status).toBe(202);
    const lastGood = ctrl.status().lastWebhook;
    expect(lastGood).toMatchObject({ status: 202, form: 'github', result: 'ignored: ping: the hook works' });
    const before = events.length;
    const c = await commit('pushed, then announced with a forged signature');
    const body = push();
    const gh = await post('/hooks/git', body, { 'x-github-event': 'push', 'x-hub-signature-256': sign(body, 'not the secret') });
    expect(gh.status).toBe(401);
    const gl = await post('/hooks/git', body, { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': 'not the secret' });
    expect(gl.status).toBe(401);
    expect((await post('/hooks/git', body, {})).status).toBe(401);
    await new Promise((r) => setTimeout(r, 500));
    expect(events.slice(before).filter((e) => e.event.kind === 'noticed' || e.event.kind === 'phase')).toEqual([]);
    expect(ctrl.history.list().some((r) => r.commit === c)).toBe(false);
    expect(ctrl.status().lastWebhook).toEqual(lastGood);
  });

  // The payload's `after` names another commit than the head: an older one that was never
  // reconciled (a replayed or forged delivery), or one the repository does not have.
  const OLDER = 'an older commit';
  const MISSING = 'a commit that does not exist';
  it.each([
    ['GitHub', OLDER],
    ['GitHub', MISSING],
    ['GitLab', OLDER],
    ['GitLab', MISSING],
  ])('a good %s delivery naming %s is answered 202 and reconciles the head the repository names, nothing else', async (form, named) => {
    const older = await commit(`pushed before the head ${Math.random()}`);
    const head = await commit(`announced by a good webhook ${Math.random()}`);
    const after = named === OLDER ? older : 'badc0ffee'.repeat(5).slice(0, 40);
    const before = events.length;
    const body = push('refs/heads/main', after);
    const headers: Record<string, string> = form === 'GitHub' ? { 'x-github-event': 'push', 'x-hub-signature-256': sign(body) } : { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET };
    const res = await post('/hooks/git', body, headers);
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ result: 'accepted' });
    const ended = await until('the reconcile to end', () => events.slice(before).find((e) => e.event.kind === 'reconciled'));
    const sequence = events.slice(before).filter((e) => ['noticed', 'phase', 'reconciled'].includes(e.event.kind));
    // Noticed as the webhook's, then reconciled to its verdict: all of it about the head.
    expect(sequence[0]!.event).toMatchObject({ kind: 'noticed', commit: head, trigger: { kind: 'webhook', detail: form.toLowerCase() } });
    expect(new Set(sequence.map((e) => e.commit ?? ('commit' in e.event ? e.event.commit : undefined)))).toEqual(new Set([head]));
    expect(ended.event).toMatchObject({ commit: head, outcome: 'build-failed' });
    await ctrl.drained();
    expect(ctrl.history.list(1)[0]).toMatchObject({ commit: head, trigger: { kind: 'webhook' }, outcome: 'build-failed' });
    expect(ctrl.history.list().some((r) => r.commit === after)).toBe(false);
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

  it('the token in the query string authorizes nothing (401); the same token as a header does', async () => {
    const res = await fetch(`${base}/api/pause?token=${encodeURIComponent(TOKEN)}`, { method: 'POST' });
    expect(res.status).toBe(401);
    expect(ctrl.status().paused).toBe(false);
    expect((await fetch(`${base}/api/pause`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(202);
    expect(ctrl.status().paused).toBe(true);
    expect((await fetch(`${base}/api/resume`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(202);
    await ctrl.drained();
  });

  it('refuses to start on a non-loopback address without a token', async () => {
    await expect(startServer(ctrl, { host: '0.0.0.0', port: await freePort(), token: '' })).rejects.toThrow(/a non-loopback address needs a token/);
  });
});

describe('the Host header (DNS rebinding)', () => {
  it.each(['/', '/api/status', '/metrics', '/api/events', '/api/history'])('Host: evil.example gets 421 on %s, saying which Host was refused and why', async (path) => {
    const res = await withHost('GET', path, 'evil.example');
    expect(res.status).toBe(421);
    expect(JSON.parse(res.body).error).toMatch(/^misdirected request: Host "evil\.example" is not a name of this server, .*DNS rebinding/);
  });

  it('a refused Host changes nothing, even with the token', async () => {
    const res = await withHost('POST', '/api/pause', `evil.example:${port}`, { authorization: `Bearer ${TOKEN}` });
    expect(res.status).toBe(421);
    expect(ctrl.status().paused).toBe(false);
  });

  it.each(['/', '/api/status', '/metrics', '/api/events'])('its loopback names, with or without the port, get 200 on %s', async (path) => {
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, '127.0.0.1', `[::1]:${port}`]) {
      expect((await withHost('GET', path, host)).status, host).toBe(200);
    }
  });

  it('accepts loopback names and the address it listens on; refuses names that merely contain them', () => {
    const refused = hostCheck('192.168.1.10');
    for (const ok of ['192.168.1.10', '192.168.1.10:8180', 'LOCALHOST:8180', '127.0.0.2', '[::1]', '::1']) expect(refused(ok), ok).toBeUndefined();
    for (const bad of ['evil.example', '192.168.1.10.evil.example', 'localhost.evil.example:8180', '127.0.0.1.nip.io', '127.evil.example', '192.168.1.11', '[::1', '']) expect(refused(bad), bad).toMatch(/is not a name of this server/);
    expect(refused(undefined)).toMatch(/without a Host header/);
  });
});
