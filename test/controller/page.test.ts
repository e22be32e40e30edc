import { execa } from 'execa';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReconcileRecord } from '../../controller/history.js';
import { parseProbe } from '../../controller/page/probe.js';
import { pageRoutes } from '../../controller/page/routes.js';
import { startServer } from '../../controller/server.js';
import { REASON } from '../../deploy/verdict.js';
import { readSegmentFiles } from '../../image/cpio-read.js';
import { parseConfig } from '../../lib/config.js';
import { UsageError } from '../../lib/errors.js';
import { ARTIFACTS, launchBrowser, type Browser } from '../helpers/browser.js';
import { alpineConfig, localMirror, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { ntfyStandIn, webhookReceiver, type StandIn } from '../helpers/forges.js';
import { freePort } from '../helpers/ramboot.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';
import { INVALID_YAML, VALID_YAML, phasesOf, startViews, type ViewsUnderTest } from '../helpers/views.js';

// The status page in Debian's Chromium against a real controller following a real
// repository. Its history holds a promoted, a rolled-back, a superseded and a
// build-failed reconcile, written as the controller writes them; the machine is a local
// OpenSSH server standing in for the NAS, which the page's probe asks over SSH for its
// uptime, memory and medium use. First the controller reconciles a commit holding
// secrets encrypted to its identity for real: the build decrypts them into the image and
// the deploy stops at the host key (the image's is not the stand-in's), so its record and
// log are there for a leak to show in. A reconcile then runs for real (an invalid
// ramboot.yaml ends it at the build) and another is replayed through the controller's
// events, and the page follows both without a reload.

const REPO_SECRET = 'db-password-plaintext-Zr8wQ3nY6c';
const SECRET_PATH = 'etc/app/db-password';
/** The recipient of the controller's age identity. */
let recipient: string;
/** The private host key of the commit's image, a secret too. */
let hostKey: string;
/** The real reconcile of the commit holding the secrets. */
let built: ReconcileRecord;
let v: ViewsUnderTest;
let sshd: TestSshd;
let ntfy: StandIn;
let hook: StandIn;
let browser: Browser;
const r: Record<'promoted' | 'rolledBack' | 'superseded' | 'buildFailed', ReconcileRecord> = {} as never;
/** Every response body the tests saw, to look for secrets in. */
const seen: string[] = [];

async function get(path: string, init?: RequestInit): Promise<Response> {
  const res = await fetch(`${v.base}${path}`, init);
  seen.push(await res.clone().text());
  return res;
}

/**
 * 40 characters of an OpenSSH ed25519 private key file that encode its private seed only
 * (the file's header is the same for every key, the public key is shown on purpose).
 */
function privatePart(pem: string): string {
  const body = pem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
  const bytes = Buffer.from(body, 'base64');
  // The private section: string "ssh-ed25519", string public (32), string seed ‖ public (64).
  const seedAt = bytes.lastIndexOf('ssh-ed25519') + 11 + 4 + 32 + 4;
  const from = Math.ceil(seedAt / 3) * 4;
  return body.slice(from, from + 40);
}

/** An age-encrypted secret file, as `ramboot secrets add` leaves one in the repository: to the controller's identity. */
async function encrypted(plaintext: string): Promise<string> {
  return (await execa('age', ['-a', '-r', recipient], { input: plaintext })).stdout;
}

beforeAll(async () => {
  sshd = await startSshd();
  [ntfy, hook] = await Promise.all([ntfyStandIn(), webhookReceiver()]);
  // The webhook's receiver is down for good: its failure is to be seen on the page.
  hook.failNext(Number.MAX_SAFE_INTEGER, 500);
  const keys = mkdtempSync(join(tmpdir(), 'ramboot-page-keys-'));
  const identity = join(keys, 'controller.key');
  await execa('age-keygen', ['-o', identity]);
  chmodSync(identity, 0o600);
  recipient = (await execa('age-keygen', ['-y', identity])).stdout.trim();
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(keys, 'host')]);
  hostKey = readFileSync(join(keys, 'host'), 'utf8');
  v = await startViews({ identity, reach: () => ({ address: '127.0.0.1', port: sshd.port, identity: sshd.clientKey }), retry: { attempts: 2, firstMs: 50, maxMs: 50, timeoutMs: 2000 } });

  // A commit that builds offline (the fixtures' Alpine and the local test mirror), with
  // its secrets; the controller reconciles it before anything else is written.
  writeFiles(v.repo, { ...minimalAlpineFiles(localMirror()), [`secrets/${SECRET_PATH}.age`]: await encrypted(REPO_SECRET), 'secrets/etc/ssh/ssh_host_ed25519_key.age': await encrypted(hostKey) });
  const yaml = alpineConfig(localMirror()).replace('name: alpine-test', 'name: nas').replace('recipients: []', `recipients: [${recipient}]`);
  const a = await v.commit('nginx: serve the photo share', yaml);
  await v.ctrl.poll({ kind: 'start' });
  await v.ctrl.drained();
  built = v.ctrl.history.list(1)[0]!;
  expect(built).toMatchObject({ commit: a, outcome: 'upload-failed', reason: REASON.HOST_KEY_MISMATCH });

  const b = await v.commit('nginx: proxy to the new backend', VALID_YAML('# b\n'));
  const c = await v.commit('samba: add the scanner share', VALID_YAML('# c\n'));
  const d = await v.commit('try gentoo', INVALID_YAML('d'));

  // The running build: its manifest (for the probe's pinned host key and boot medium) and the journal's promotion.
  const buildId = `${a.slice(0, 8)}-5e1f09ab`;
  const settings = parseConfig(`host: { name: nas }\nboot: { medium: ${JSON.stringify(v.state.dir)} }\n`);
  mkdirSync(join(v.state.images, buildId), { recursive: true });
  writeFileSync(join(v.state.images, buildId, 'manifest.json'), JSON.stringify({ formatVersion: 2, buildId, commit: a, hostKey: sshd.hostKey, settings: { host: settings.host, boot: settings.boot, trial: settings.trial, health: settings.health } }));
  await v.promote(a, buildId, sshd.hostKey);

  r.promoted = v.save({
    commit: a,
    subject: 'nginx: serve the photo share',
    author: 'Tess Ter',
    trigger: { kind: 'webhook', detail: 'github' },
    ...phasesOf(3 * 86_400, [['queued', 0.2], ['build', 41], ['preflight', 2], ['upload', 18], ['reboot', 104], ['health', 12], ['promote', 3]]),
    outcome: 'promoted',
    reason: REASON.HEALTHY,
    message: `build ${buildId} promoted: every health check passed`,
    buildId,
    bytesSent: 2_100_000,
    imageBytes: 84_000_000,
  });
  r.rolledBack = v.save({
    commit: b,
    subject: 'nginx: proxy to the new backend',
    author: 'Tess Ter',
    trigger: { kind: 'push', detail: 'git push' },
    ...phasesOf(7200, [['queued', 0.1], ['build', 38], ['preflight', 2], ['upload', 15], ['reboot', 98], ['health', 60], ['rollback', 90]]),
    outcome: 'trial-not-healthy',
    reason: REASON.CHECK_FAILED,
    message: 'health check "photos" failed: HTTP 502 from http://127.0.0.1/photos; rolled back to the running build (quarantined: not deployed again unless released)',
    output: 'check photos: HTTP 502 Bad Gateway',
    buildId: `${b.slice(0, 8)}-77aa0c31`,
    // As the controller keeps it (the e2e controller test makes a real one): the page shows its text.
    plan: { against: buildId, changes: 1, text: 'files\n  ~ etc/nginx/conf.d/photos.conf (content)\n', json: {} as never },
    bytesSent: 1_400_000,
    imageBytes: 84_100_000,
  });
  v.ctrl.quarantine.add({ commit: b, outcome: 'trial-not-healthy', message: r.rolledBack.message!, at: r.rolledBack.endedAt!, reconcile: r.rolledBack.id });
  r.superseded = v.save({
    commit: c,
    subject: 'samba: add the scanner share',
    author: 'Tess Ter',
    trigger: { kind: 'ref' },
    ...phasesOf(3000, [['queued', 30]]),
    startedAt: undefined,
    outcome: 'superseded',
    reason: REASON.SUPERSEDED,
    message: `superseded by ${d.slice(0, 12)} before it started`,
  });
  r.buildFailed = v.save({
    commit: d,
    subject: 'try gentoo',
    author: 'Tess Ter',
    trigger: { kind: 'ref' },
    ...phasesOf(2900, [['queued', 0.1], ['build', 0.4]]),
    outcome: 'build-failed',
    reason: REASON.BUILD_FAILED,
    message: 'build failed: ramboot.yaml, line 2, key distro.name: must be one of "alpine", "debian" (quarantined: not deployed again unless released)',
  });
  v.ctrl.quarantine.add({ commit: d, outcome: 'build-failed', message: r.buildFailed.message!, at: r.buildFailed.endedAt!, reconcile: r.buildFailed.id });
  // The branch as the controller saw it last (no reconcile: d is quarantined).
  await v.ctrl.poll({ kind: 'start' });
  // The machine's facts, asked over SSH.
  v.machine.get();
  await v.machine.settled();
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await v?.close();
  await sshd?.stop();
  await Promise.all([ntfy?.close(), hook?.close()]);
});

const VERDICTS: [keyof typeof r, RegExp, RegExp][] = [
  ['promoted', /promoted/, /Healthy/],
  ['rolledBack', /rolled back: not healthy/, /CheckFailed[\s\S]*health check "photos" failed: HTTP 502/],
  ['superseded', /superseded/, /Superseded[\s\S]*superseded by [0-9a-f]{12} before it started/],
  ['buildFailed', /build failed/, /BuildFailed[\s\S]*key distro\.name: must be one of/],
];

describe('the status page in a browser', () => {
  it('shows each reconcile with its verdict and reason, the machine and the commits; a screenshot is saved', async () => {
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await page.goto(v.base);
    for (const [name, verdict, reason] of VERDICTS) {
      const entry = page.locator(`#r-${r[name].id}`);
      await expect.poll(() => entry.locator('.badge').first().innerText()).toMatch(verdict);
      expect(await entry.innerText()).toMatch(reason);
    }
    // Durations, bytes and who: what a reader wants from one line of history.
    const promoted = await page.locator(`#r-${r.promoted.id}`).innerText();
    expect(promoted).toMatch(/Tess Ter · webhook \(github\) · build 41\.0 s · preflight 2\.0 s · upload 18\.0 s · reboot 1 min 44 s · health 12\.0 s · promote 3\.0 s · sent 2\.0 MiB of 80 MiB/);
    expect(await page.locator(`#r-${r.promoted.id} time`).getAttribute('datetime')).toBe(r.promoted.endedAt);
    expect(await page.locator(`#r-${r.promoted.id} time`).innerText()).toBe('3 days ago');
    // The commits: desired (the branch) against running (the journal) against the last attempt.
    const commits = await page.locator('#commits').innerText();
    expect(commits).toMatch(/Desired[\s\S]*try gentoo/);
    expect(commits).toMatch(/Running[\s\S]*nginx: serve the photo share[\s\S]*differs from desired/);
    expect(commits).toMatch(/Last attempt[\s\S]*build failed/);
    // The machine, asked over SSH with the pinned host key.
    const machine = await page.locator('#machine').innerText();
    expect(machine).toMatch(/Uptime\s+\d/);
    expect(machine).toMatch(/Memory\s+[\d.]+ [KMG]iB of [\d.]+ [KMG]iB \(\d+ %\)/);
    expect(machine).toMatch(/Boot medium\s+[\d.]+ [KMGT]iB of [\d.]+ [KMGT]iB/);
    // The stand-in booted with BIOS (no /sys/firmware/efi).
    expect(machine).toMatch(/Boots\s+BIOS, syslinux/);
    expect(machine).toMatch(/asked over SSH/);
    expect(await page.locator('#quarantine').innerText()).toMatch(/quarantine\s+2/i);
    expect(await page.locator('#stream').innerText()).toBe('live');
    await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-phone.png'), fullPage: true });
    // On a phone nothing is wider than the screen.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.goto(`${v.base}/history/${r.rolledBack.id}`);
    expect(await page.locator('main').innerText()).toMatch(/rolled back: not healthy[\s\S]*CheckFailed[\s\S]*check photos: HTTP 502 Bad Gateway[\s\S]*rollback\s+2 h ago\s+1 min 30 s/);
    expect(await page.locator('#plan-h + *').innerText()).toBe(`1 change to the machine, against build ${r.promoted.buildId}`);
    expect(await page.locator('main').innerText()).toContain('~ etc/nginx/conf.d/photos.conf (content)');
    await page.screenshot({ path: join(ARTIFACTS, 'history-entry.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('follows a live reconcile without a reload: a real one, then a deploy replayed through the controller', async () => {
    const page = await browser.context.newPage();
    await page.goto(v.base);
    await expect.poll(() => page.locator('#stream').innerText()).toBe('live');
    await page.evaluate(() => ((window as unknown as { unreloaded: boolean }).unreloaded = true));

    // A real reconcile, asked for from the page with the token pasted in.
    const e = await v.commit('try gentoo again', INVALID_YAML('e'));
    await page.fill('#token', v.token);
    await page.click('button[formaction="/api/reconcile"]');
    await expect.poll(() => page.locator('#action-result').innerText()).toMatch(/Done: reconcile/);
    await v.ctrl.drained();
    const real = v.ctrl.history.list(1)[0]!;
    expect(real).toMatchObject({ commit: e, outcome: 'build-failed' });
    await expect.poll(() => page.locator(`#r-${real.id}`).innerText().catch(() => '')).toMatch(/build failed[\s\S]*try gentoo again/);
    await expect.poll(() => page.locator('#commits').innerText()).toMatch(/Last attempt[\s\S]*try gentoo again/);

    // A deploy that needs a machine, replayed as the controller's reconcile emits it.
    const f = await v.commit('photos: a bigger cache', VALID_YAML(`notify:\n  ntfy: { url: ${ntfy.url}, topic: nas-deploys }\n  webhook: { url: ${hook.url}/deploys }\n`));
    const record = v.save({ commit: f, subject: 'photos: a bigger cache', author: 'Tess Ter', trigger: { kind: 'webhook', detail: 'gitea' }, state: 'running', startedAt: new Date().toISOString(), phases: [{ name: 'queued', start: new Date().toISOString(), end: new Date().toISOString() }] });
    const phase = (name: ReconcileRecord['phases'][number]['name']) => {
      const now = new Date().toISOString();
      const last = record.phases.at(-1);
      if (last && !last.end) last.end = now;
      record.phases.push({ name, start: now });
      v.ctrl.history.save(record);
      v.emit({ kind: 'phase', source: 'controller', reconcile: record.id, commit: f, phase: name }, record);
    };
    const now = page.locator('#now');
    phase('build');
    await expect.poll(() => now.locator('li.current').innerText()).toMatch(/build/);
    phase('upload');
    v.emit({ kind: 'upload', file: '/media/usb/boot/ramboot/overlay-1a2b.cpio.zst', sent: 1024 * 1024, total: 4 * 1024 * 1024 }, record);
    await expect.poll(() => now.innerText()).toMatch(/Uploading overlay-1a2b\.cpio\.zst:\s+1\.0 MiB of 4\.0 MiB/);
    expect(await now.locator('li.done').allInnerTexts()).toEqual(expect.arrayContaining([expect.stringMatching(/queued/), expect.stringMatching(/build/)]));
    v.emit({ kind: 'upload', file: '/media/usb/boot/ramboot/overlay-1a2b.cpio.zst', sent: 3 * 1024 * 1024, total: 4 * 1024 * 1024 }, record);
    // Progress alone refreshes the page a second later (client.js, PROGRESS_MS): as long as
    // expect.poll waits by default, so it is given room rather than raced.
    await expect.poll(() => now.innerText(), { timeout: 30_000 }).toMatch(/3\.0 MiB of 4\.0 MiB/);
    phase('reboot');
    v.emit({ kind: 'wait', what: 'the trial boot', elapsedMs: 42_000, observation: { reachable: false, error: 'connect ECONNREFUSED' } }, record);
    await expect.poll(() => now.innerText()).toMatch(/Waiting for the trial boot: 42\.0 s/);
    phase('health');
    v.emit({ kind: 'check', event: { check: 'photos', attempt: 1, of: 3, ok: false, output: 'HTTP 502' } }, record);
    await expect.poll(() => now.innerText()).toMatch(/Health check photos: attempt 1 of 3, not yet/);
    expect(await page.locator('#glance').innerText()).toMatch(/deploying [0-9a-f]{12}: health/);
    phase('promote');
    Object.assign(record, { state: 'done', outcome: 'promoted', reason: REASON.HEALTHY, message: 'promoted: every health check passed', endedAt: new Date().toISOString() });
    record.phases.at(-1)!.end = record.endedAt;
    v.ctrl.history.save(record);
    v.emit({ kind: 'reconciled', source: 'controller', reconcile: record.id, commit: f, outcome: 'promoted', message: record.message! }, record);
    await expect.poll(() => page.locator(`#r-${record.id}`).innerText().catch(() => '')).toMatch(/promoted[\s\S]*photos: a bigger cache/);
    await expect.poll(() => now.innerText()).toMatch(/Nothing runs now/);
    // The notifications of this deploy: ntfy took them, the webhook's receiver refused them.
    const notifications = page.locator('#notifications');
    await expect.poll(() => notifications.innerText()).toMatch(/ntfy topic nas… on http:\/\/127\.0\.0\.1:\d+\s+✓\s+delivered verdict/);
    await expect.poll(() => notifications.innerText()).toMatch(/webhook http:\/\/127\.0\.0\.1:\d+\/…\s+✗\s+failed verdict[\s\S]*answered HTTP 500/);
    expect(await page.locator('#controller').innerText()).toMatch(/degraded[\s\S]*notifications to webhook fail/);
    expect(await page.evaluate(() => (window as unknown as { unreloaded?: boolean }).unreloaded)).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-after-deploys.png'), fullPage: true });
    await page.close();
  });

  it('without JavaScript the same facts are in the HTML', async () => {
    const plain = await launchBrowser({ javaScript: false });
    try {
      const page = await plain.context.newPage();
      await page.goto(v.base);
      for (const [name, verdict, reason] of VERDICTS) {
        const text = await page.locator(`#r-${r[name].id}`).innerText();
        expect(text).toMatch(verdict);
        expect(text).toMatch(reason);
      }
      expect(await page.locator('#machine').innerText()).toMatch(/Memory\s+[\d.]+ [KMG]iB of/);
      expect(await page.locator('#commits').innerText()).toMatch(/Running[\s\S]*nginx: serve the photo share/);
      expect(await page.locator('#stream').isHidden()).toBe(true);
    } finally {
      await plain.close();
    }
    // And in the document itself, as any client fetches it.
    const html = await (await get('/')).text();
    expect(html).toMatch(/<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC" data-rel>/);
    for (const [name] of VERDICTS) expect(html).toContain(`id="r-${r[name].id}"`);
    expect(html).toContain('rolled back: not healthy');
    expect(html).toContain('must be one of &quot;alpine&quot;, &quot;debian&quot;');
  });
});

describe('an insecure setup', () => {
  it('the controller\'s insecure sentence is a warning banner at the top of the page, in a browser and in the HTML; a secure setup shows none', async () => {
    expect(await (await get('/')).text()).not.toContain('class="insecure"');
    const sentence = 'following a plain http:// remote without signed commits: anyone on the path can change the machine';
    const status = v.ctrl.status.bind(v.ctrl);
    v.ctrl.status = () => ({ ...status(), insecure: sentence });
    try {
      expect(await (await get('/')).text()).toContain(`<p id="insecure" class="insecure" role="alert"><strong>Insecure:</strong> ${sentence}</p>`);
      const page = await browser.context.newPage();
      await page.goto(v.base);
      const banner = page.locator('#insecure');
      expect(await banner.innerText()).toBe(`Insecure: ${sentence}`);
      // Above everything else in main, where it cannot be missed.
      expect(await page.locator('main > :first-child').getAttribute('id')).toBe('insecure');
      await page.screenshot({ path: join(ARTIFACTS, 'status-page-insecure.png') });
      await page.close();
    } finally {
      v.ctrl.status = status;
    }
  });
});

describe('actions and the token', () => {
  it('a form without JavaScript pauses with the token, and without it is refused (401) and changes nothing', async () => {
    const form = (token?: string) => ({ method: 'POST', redirect: 'manual' as const, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: token ? new URLSearchParams({ token }).toString() : '' });
    const refused = await get('/api/pause', form('not the token'));
    expect(refused.status).toBe(401);
    expect(await refused.text()).toMatch(/token was refused; nothing changed/);
    expect(v.ctrl.status().paused).toBe(false);
    const done = await get('/api/pause', form(v.token));
    expect(done.status).toBe(303);
    expect(done.headers.get('location')).toBe('/?done=pause');
    expect(v.ctrl.status().paused).toBe(true);
    expect(await (await get('/?done=pause')).text()).toMatch(/Automatic deploys are paused\.[\s\S]*Resume automatic deploys/);
    await get('/api/resume', form(v.token));
    expect(v.ctrl.status().paused).toBe(false);
    await v.ctrl.drained();
  });

  it('every action without the token is refused (401) and changes nothing', async () => {
    const before = { history: v.ctrl.history.list().length, quarantine: v.ctrl.quarantine.list().length, paused: v.ctrl.status().paused };
    const held = v.ctrl.quarantine.list()[0]!.commit;
    for (const path of ['/api/reconcile', `/api/release/${held}`, '/api/pause', '/api/resume']) {
      for (const headers of [{} as Record<string, string>, { authorization: 'Bearer wrong' }, { authorization: `Basic ${Buffer.from(`x:${v.token}`).toString('base64')}` }]) {
        expect((await get(path, { method: 'POST', headers })).status, `${path} ${JSON.stringify(headers)}`).toBe(401);
      }
    }
    await new Promise((res) => setTimeout(res, 300));
    expect({ history: v.ctrl.history.list().length, quarantine: v.ctrl.quarantine.list().length, paused: v.ctrl.status().paused }).toEqual(before);
  });

  it('refuses to start on a non-loopback address without a token, saying how to fix it', async () => {
    const err = await startServer(v.ctrl, { host: '0.0.0.0', port: await freePort(), token: '' }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/^failed to start the API on 0\.0\.0\.0:\d+: a non-loopback address needs a token \(--token-file\)$/);
  });

  it('off loopback every request needs the token: the page asks a browser for it (HTTP Basic), the API takes it as a header', async () => {
    const port = await freePort();
    const app = await startServer(v.ctrl, { host: '0.0.0.0', port, token: v.token, routes: [pageRoutes({ host: 'nas', live: v.live, machine: v.machine, notifications: () => v.notifier.state() }), v.metrics.routes()] });
    try {
      const base = `http://127.0.0.1:${port}`;
      for (const path of ['/', '/api/status', '/api/history', '/api/events', '/metrics']) {
        const res = await fetch(`${base}${path}`);
        expect(res.status, path).toBe(401);
        expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="ramboot"/);
      }
      expect((await fetch(`${base}/api/status`, { headers: { authorization: `Bearer ${v.token}` } })).status).toBe(200);
      expect((await fetch(`${base}/api/status`, { headers: { authorization: `Basic ${Buffer.from(`any:${v.token}`).toString('base64')}` } })).status).toBe(200);
      expect((await fetch(`${base}/api/status`, { headers: { authorization: `Basic ${Buffer.from('any:wrong').toString('base64')}` } })).status).toBe(401);
    } finally {
      await app.close();
    }
  });

  it('every response sets the security headers', async () => {
    for (const path of ['/', `/history/${r.promoted.id}`, '/page/style.css', '/page/client.js', '/metrics', '/api/machine']) {
      const res = await get(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    }
  });
});

describe('secrets', () => {
  it('no secret value reaches the page, the API or the metrics', async () => {
    const paths = ['/', '/?before=' + r.buildFailed.id, '/api/status', '/api/history', '/api/machine', '/api/notifications', '/metrics', '/page/client.js'];
    for (const rec of v.ctrl.history.list()) paths.push(`/history/${rec.id}`, `/api/history/${rec.id}`, `/api/history/${rec.id}/log`);
    for (const p of paths) expect((await get(p)).status, p).toBe(200);
    // The build decrypted the repository's secret into the image: it was there to leak.
    const inImage = await readSegmentFiles(join(v.state.images, built.buildId!, 'secrets.cpio.zst'), [SECRET_PATH], 1024);
    expect(inImage.get(SECRET_PATH)?.toString()).toBe(REPO_SECRET);
    const secrets = {
      'the API token': v.token,
      "the repository's secret": REPO_SECRET,
      "the image's host key": privatePart(hostKey),
      "the controller's SSH key": privatePart(readFileSync(sshd.clientKey, 'utf8')),
    };
    expect(seen.length).toBeGreaterThan(paths.length);
    for (const body of seen) for (const [what, value] of Object.entries(secrets)) expect(body.includes(value), `${what} in a response`).toBe(false);
  });
});

describe('the machine panel knows both boot layouts', () => {
  it('reads the firmware and, on UEFI, the boot entries with their counters from the probe', () => {
    const out = ['12.5 3.0', 'MemTotal: 1000 kB\nMemAvailable: 500 kB', 'Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/root 100 50 50 50% /', 'uefi\nlts.conf\nnew+0-1.conf\nold.conf\n'].join('--ramboot--\n');
    expect(parseProbe(out, '/media/usb').boot).toEqual({ firmware: 'uefi', entries: ['lts.conf', 'new+0-1.conf', 'old.conf'] });
    expect(parseProbe(out.replace(/uefi\n[\s\S]*$/, 'bios\n'), '/media/usb').boot).toEqual({ firmware: 'bios', entries: [] });
  });
});
