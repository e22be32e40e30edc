import { createHmac } from 'node:crypto';
import { execa } from 'execa';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify from 'fastify';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import type { Controller } from '../../controller/controller.js';
import { Dispatcher } from '../../controller/notify/dispatch.js';
import type { Notice } from '../../controller/notify/notice.js';
import type { Target } from '../../controller/notify/target.js';
import type { Live } from '../../controller/page/live.js';
import { MachineProbe } from '../../controller/page/probe.js';
import { pageRoutes } from '../../controller/page/routes.js';
import { STATE_ROOT, machineKey, originOf } from '../../controller/state.js';
import { GENERIC_SIGNATURE } from '../../controller/push-webhook.js';
import { readManifest } from '../../image/manifest.js';
import { git, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { startController } from '../helpers/controller.js';
import { SHARED_STATE, freePort, ramboot, tempDir } from '../helpers/ramboot.js';

// Promises the README makes that no other test checked (issue 21), each through what a
// user touches: the real CLI for flags and environment variables, the README's own text
// for its numbers. Where a promise is already tested elsewhere, that file is named:
// `--signers FILE` kept across restarts (read back through /api/status):
// test/controller/trust.test.ts; here, what controller.json holds and `--signers none`.

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

/**
 * A repository whose controller never reaches a machine and whose builds fail at once:
 * a host.address where nothing listens (so `ramboot up` boots no virtual NAS) and a
 * minirootfs that does not exist. What is under test is what happens around the build.
 */
function quickRepo(): string {
  return makeRepo({
    'ramboot.yaml': `host: { name: nas, address: 127.0.0.1, port: 1 }\ndistro: { name: alpine, minirootfs: { url: ./missing-minirootfs.tar.gz, sha512: "${'0'.repeat(128)}" } }\n`,
    packages: 'busybox\n',
  });
}

/** The state directory a verb uses for the repository when neither --state nor $RAMBOOT_STATE is given. */
const defaultState = (repo: string) => join(STATE_ROOT, machineKey(originOf(repo)));

const made: string[] = [];
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** The environment of a CLI run: nothing inherited that names a state or cache directory. */
function cleanEnv(extra: Record<string, string>): Record<string, string> {
  const home = tempDir('home');
  return { HOME: home, RAMBOOT_IDENTITY: '', RAMBOOT_STATE: '', ...extra };
}

describe('$RAMBOOT_STATE', () => {
  it('ramboot up with $RAMBOOT_STATE=DIR (no --state) writes its state and caches under DIR, and nothing in the default /var/lib/ramboot/REPO-ID', async () => {
    const repo = quickRepo();
    made.push(defaultState(repo));
    const work = tempDir('env-state');
    const dir = join(work, 'state');
    // $RAMBOOT_CACHE would name the cache on its own: this run must not inherit one.
    const env = cleanEnv({ RAMBOOT_STATE: dir });
    const saved = process.env.RAMBOOT_CACHE;
    delete process.env.RAMBOOT_CACHE;
    let ctrl;
    try {
      ctrl = await startController(['--repo', repo], { state: '', listen: await freePort(), env, logFile: join(work, 'up.log') });
    } finally {
      if (saved !== undefined) process.env.RAMBOOT_CACHE = saved;
    }
    try {
      // From git, not the status: the API answers before the first poll sets `desired`.
      const head = git(repo, 'rev-parse', 'HEAD').trim();
      const r = await ctrl.waitFor(head, 120_000);
      expect(r.outcome).toBe('build-failed');
      expect(readdirSync(dir).sort()).toEqual(expect.arrayContaining(['api-token', 'api.json', 'cache', 'controller.json', 'history']));
      expect(readdirSync(join(dir, 'history')).some((n) => n.startsWith(r.id))).toBe(true);
      // The build's download went to DIR/cache, not /var/cache/ramboot.
      expect(existsSync(join(dir, 'cache', 'packages', 'alpine'))).toBe(true);
      expect(existsSync(defaultState(repo))).toBe(false);
    } finally {
      await ctrl.kill('SIGTERM');
    }
  }, 5 * 60_000);
});

/** What an earlier ramboot left in REPO/.ramboot: images, the virtual NAS's disk, the journal under state/HOST, caches. */
function legacyState(repo: string): void {
  writeFiles(repo, {
    '.ramboot/images/b-old/manifest.json': '{"an": "image an earlier ramboot built"}\n',
    '.ramboot/vm/disk.img': 'the virtual NAS disk\n',
    '.ramboot/state/nas/deploy.jsonl': '{"step":"verdict","note":"an earlier deploy"}\n',
    '.ramboot/cache/downloads-old/file': 'a cached download\n',
  });
}

function expectMoved(repo: string, state: string, cache: string): void {
  expect(existsSync(join(repo, '.ramboot'))).toBe(false);
  expect(readFileSync(join(state, 'images', 'b-old', 'manifest.json'), 'utf8')).toContain('an earlier ramboot');
  expect(readFileSync(join(state, 'vm', 'disk.img'), 'utf8')).toBe('the virtual NAS disk\n');
  expect(readFileSync(join(state, 'deploy.jsonl'), 'utf8')).toContain('an earlier deploy');
  expect(readFileSync(join(cache, 'downloads-old', 'file'), 'utf8')).toBe('a cached download\n');
}

describe('REPO/.ramboot of an earlier ramboot', () => {
  it('ramboot build moves it out of the repository (images, the virtual NAS disk, the journal to the default state directory; caches to the cache) with a one-line notice', async () => {
    const repo = quickRepo();
    const state = defaultState(repo);
    made.push(state);
    legacyState(repo);
    const cache = join(tempDir('legacy-cache'), 'cache');
    const r = await ramboot(['build', '--repo', repo, '--images', join(tempDir('legacy-images'), 'images')], cleanEnv({ RAMBOOT_CACHE: cache }));
    // The build itself fails (no minirootfs); the move happens when the verb opens the repository.
    const notices = r.stderr.split('\n').filter((l) => l.includes('.ramboot'));
    expect(notices).toEqual([`ramboot: moved ${join(repo, '.ramboot')} to ${state} (state) and ${cache} (caches): state no longer lives in the repository`]);
    expectMoved(repo, state, cache);
    // Only once: a second run has nothing to move and says nothing about it.
    const again = await ramboot(['build', '--repo', repo, '--images', join(tempDir('legacy-images'), 'images')], cleanEnv({ RAMBOOT_CACHE: cache }));
    expect(again.stderr).not.toMatch(/\.ramboot/);
  }, 3 * 60_000);

  it('ramboot up moves it out too, with its one-line notice, before it reads the journal', async () => {
    const repo = quickRepo();
    const state = defaultState(repo);
    made.push(state);
    legacyState(repo);
    const work = tempDir('legacy-up');
    const cache = join(work, 'cache');
    const ctrl = await startController(['--repo', repo], { state: '', listen: await freePort(), env: cleanEnv({ RAMBOOT_CACHE: cache }), logFile: join(work, 'up.log') });
    try {
      // The log is written through a pipe: wait for a later line of the same stream (stderr),
      // the first build's verdict, to be sure the notice had its chance to arrive.
      await ctrl.waitStatus('the first build\'s verdict in the log', 120_000, () => /controller: \w+: build-failed/.test(readFileSync(ctrl.log, 'utf8')));
      const notices = readFileSync(ctrl.log, 'utf8').split('\n').filter((l) => l.includes('.ramboot'));
      expect(notices).toEqual([`controller: warning: moved ${join(repo, '.ramboot')} to ${state} (state) and ${cache} (caches): state no longer lives in the repository`]);
      expectMoved(repo, state, cache);
    } finally {
      await ctrl.kill('SIGTERM');
    }
  }, 5 * 60_000);

  it('ramboot history moves it out with the one-line notice', async () => {
    const repo = quickRepo();
    const state = defaultState(repo);
    made.push(state);
    legacyState(repo);
    const cache = join(tempDir('legacy-cache'), 'cache');
    const r = await ramboot(['history', '--repo', repo], cleanEnv({ RAMBOOT_CACHE: cache }));
    expect(r.exitCode).toBe(0);
    expectMoved(repo, state, cache);
    expect(r.stderr.split('\n').filter((l) => l.includes('.ramboot'))).toHaveLength(1);
  }, 3 * 60_000);
});

describe('ramboot build --dir DIR', () => {
  it('builds the directory as it is, not a commit: a directory that is no git repository, offline (local Alpine mirror), its files in the image', async () => {
    const dir = join(tempDir('build-dir'), 'nas');
    mkdirSync(dir);
    writeFiles(dir, { ...minimalAlpineFiles(localMirror()), 'root/etc/motd': 'from the directory, never committed\n' });
    const images = join(tempDir('build-dir-images'), 'images');
    const r = await ramboot(['build', '--dir', dir, '--state', SHARED_STATE, '--images', images, '--json'], cleanEnv({}));
    expect(r.exitCode, r.stderr.slice(-3000)).toBe(0);
    const built = JSON.parse(r.stdout) as { imageDir: string };
    expect(built.imageDir.startsWith(images)).toBe(true);
    const manifest = await readManifest(built.imageDir);
    expect(manifest.commit).toBeUndefined();
    expect(manifest.origin).toBe(originOf(dir));
    const motd = manifest.files.find((f) => f.path === 'etc/motd' || f.path === '/etc/motd');
    expect(motd?.size).toBe(Buffer.byteLength('from the directory, never committed\n'));
    expect(manifest.files.some((f) => /(^|\/)var\/www\/hello\.txt$/.test(f.path))).toBe(true);
  }, 10 * 60_000);
});

describe('ramboot build --fresh', () => {
  it('installs the packages anew instead of reusing the cached stage; without it the stage is reused', async () => {
    const repo = makeRepo(minimalAlpineFiles(localMirror()));
    const state = tempDir('build-fresh-state');
    const build = async (...extra: string[]) => {
      const r = await ramboot(['build', '--repo', repo, '--state', state, '--json', ...extra], cleanEnv({}));
      expect(r.exitCode, r.stderr.slice(-3000)).toBe(0);
      return JSON.parse(r.stdout) as { buildId: string; stageReused: boolean };
    };
    const first = await build();
    expect(first.stageReused).toBe(false);
    expect((await build()).stageReused).toBe(true);
    const fresh = await build('--fresh');
    expect(fresh.stageReused).toBe(false);
    // The same packages, installed again: the same image.
    expect(fresh.buildId).toBe(first.buildId);
  }, 10 * 60_000);
});

describe('ramboot up --webhook-secret FILE', () => {
  it('accepts a POST /hooks/git signed with the secret read from FILE and refuses one signed with another secret', async () => {
    const repo = quickRepo();
    const work = tempDir('webhook');
    const secretFile = join(work, 'webhook-secret');
    const secret = 'the-secret-in-the-file-Zq81';
    writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
    const ctrl = await startController(['--repo', repo, '--webhook-secret', secretFile], {
      state: join(work, 'state'),
      listen: await freePort(),
      // The file, not the environment, must be what counts.
      env: cleanEnv({ RAMBOOT_CACHE: join(work, 'cache'), RAMBOOT_WEBHOOK_SECRET: 'the-environment-secret' }),
      logFile: join(work, 'up.log'),
    });
    try {
      const body = JSON.stringify({ ref: 'refs/heads/main' });
      const post = (key: string) =>
        fetch(`${ctrl.api}/hooks/git`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', [GENERIC_SIGNATURE]: `sha256=${createHmac('sha256', key).update(body).digest('hex')}` },
          body,
        });
      const good = await post(secret);
      expect(good.status).toBe(202);
      expect(await good.json()).toMatchObject({ result: 'accepted' });
      for (const other of ['another-secret', 'the-environment-secret']) {
        const bad = await post(other);
        expect(bad.status).toBe(401);
        expect(await bad.json()).toMatchObject({ result: 'refused' });
      }
    } finally {
      await ctrl.kill('SIGTERM');
    }
  }, 5 * 60_000);
});

describe('ramboot up --signers FILE | none', () => {
  it('--signers FILE is recorded in controller.json and kept by a restart without it; only --signers none turns signing off, and it stays off', async () => {
    const work = tempDir('signers');
    const key = join(work, 'alice');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice', '-f', key]);
    const signers = join(work, 'allowed_signers');
    writeFileSync(signers, `alice@example.org ${readFileSync(`${key}.pub`, 'utf8').trim()}\n`);
    const repo = quickRepo();
    // The head signed by alice: the policy lets it through, so `ramboot up` starts.
    await execa('git', ['-c', 'user.name=Alice', '-c', 'user.email=alice@example.org', '-c', 'gpg.format=ssh', '-c', `user.signingkey=${key}`, 'commit', '-q', '-S', '--allow-empty', '-m', 'signed'], { cwd: repo });
    const state = join(work, 'state');
    const persisted = () => JSON.parse(readFileSync(join(state, 'controller.json'), 'utf8')) as { signers?: string };
    const up = async (args: string[]) =>
      startController(['--repo', repo, ...args], { state, listen: await freePort(), env: cleanEnv({ RAMBOOT_CACHE: join(work, 'cache') }), logFile: join(work, 'up.log') });

    let c = await up(['--signers', signers]);
    expect((await c.status()).signing).toEqual({ required: true, signers });
    await c.kill('SIGTERM');
    expect(persisted().signers).toBe(signers);

    c = await up([]);
    expect((await c.status()).signing).toEqual({ required: true, signers });
    await c.kill('SIGTERM');

    c = await up(['--signers', 'none']);
    expect((await c.status()).signing).toEqual({ required: false });
    await c.kill('SIGTERM');
    expect(readFileSync(join(work, 'up.log'), 'utf8')).toMatch(/signing turned off \(--signers none\)/);
    expect(persisted().signers).toBeUndefined();

    c = await up([]);
    try {
      expect((await c.status()).signing).toEqual({ required: false });
    } finally {
      await c.kill('SIGTERM');
    }
  }, 8 * 60_000);
});

describe('notifications', () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it('a target that keeps failing is retried with backoff for the time the README states ("about N minutes"), by the default schedule (fake timers, a stand-in target answering 503)', async () => {
    const m = /retried\s+with\s+backoff\s+for\s+about\s+(\w+)\s+minutes/.exec(README);
    expect(m, 'the README states how long a failing target is retried').not.toBeNull();
    const WORDS: Record<string, number> = { one: 1, two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10 };
    const minutes = WORDS[m![1]!] ?? Number(m![1]);
    expect(Number.isFinite(minutes)).toBe(true);

    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const tries: number[] = [];
    vi.stubGlobal('fetch', async () => {
      tries.push(Date.now());
      return new Response('busy', { status: 503 });
    });
    const target: Target = { kind: 'webhook', where: 'a stand-in receiver', status: false, request: () => ({ url: 'http://receiver.invalid/hook', headers: {}, body: '{}' }) };
    const results: string[] = [];
    // The default policy: no policy argument, as the notifier makes it.
    const d = new Dispatcher(undefined, (_t, a) => results.push(`${a.result} after ${a.attempts}`));
    d.send(target, { id: 'n1', event: 'verdict', commit: 'c'.repeat(40), reconcile: 'r1', state: 'failure', description: 'd' } as Notice);
    const idle = d.idle();
    await vi.runAllTimersAsync();
    await idle;

    expect(results).toEqual([`failed after ${tries.length}`]);
    const waits = tries.slice(1).map((t, i) => t - tries[i]!);
    expect(waits.length).toBeGreaterThanOrEqual(2);
    // Backoff: every wait longer than the one before.
    for (let i = 1; i < waits.length; i++) expect(waits[i]!).toBeGreaterThan(waits[i - 1]!);
    // "About N minutes" from the first try to the last: N rounded.
    const span = tries.at(-1)! - tries[0]!;
    expect(Math.round(span / 60_000), `retried for ${span / 1000} s`).toBe(minutes);
  });
});

describe('the status page asks the machine at most once a minute', () => {
  afterEach(() => vi.useRealTimers());

  it('two loads of the machine panel (GET /api/machine, the page\'s route) within a minute make one probe, a load after a minute makes another (fake clock, a stand-in machine counting probes, the default interval)', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(new Date('2026-01-01T00:00:00Z'));
    let probes = 0;
    // The default interval: no everyMs, as `ramboot up` makes it.
    const machine = new MachineProbe({ reach: async () => `stand-in machine, probe ${++probes}`, busy: () => false, promoted: () => 'build-a' });
    const app = Fastify();
    pageRoutes({ host: 'nas', live: { lastSeen: () => undefined } as unknown as Live, machine })(app, {} as Controller);
    const load = async () => (await app.inject({ method: 'GET', url: '/api/machine' })).json() as { facts?: { error?: string } };
    try {
      await load();
      await machine.settled();
      vi.setSystemTime(new Date('2026-01-01T00:00:30Z'));
      expect((await load()).facts?.error).toBe('stand-in machine, probe 1');
      await machine.settled();
      vi.setSystemTime(new Date('2026-01-01T00:00:59.9Z'));
      await load();
      await machine.settled();
      expect(probes).toBe(1);
      vi.setSystemTime(new Date('2026-01-01T00:01:00.5Z'));
      await load();
      await machine.settled();
      expect(probes).toBe(2);
      expect((await load()).facts?.error).toBe('stand-in machine, probe 2');
      expect(probes).toBe(2);
    } finally {
      await app.close();
    }
  });
});
