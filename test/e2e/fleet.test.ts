import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa, type ResultPromise } from 'execa';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FleetStatus } from '../../controller/fleet.js';
import type { ReconcileRecord } from '../../controller/history.js';
import type { SiteRecord } from '../../controller/site.js';
import { connect } from '../../deploy/ssh.js';
import type { OciManifest } from '../../image/oci.js';
import { startController, tail, type RunningController } from '../helpers/controller.js';
import { CLI, SHARED_STATE, crashingService, freePort, initRepo, ramboot, tempDir } from '../helpers/ramboot.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

// One repository, two machines (a and b, canary b), each a virtual NAS of its own that
// `ramboot up` boots one after the other; then a site controller (`ramboot up --registry`)
// that never builds, deploying what `ramboot publish` put into a real registry
// (docker-registry on loopback) to a third virtual NAS. The fleet's machines are stopped
// before the site's boots: never more than two qemu processes at once.

const MINUTES = 60_000;
const MEDIUM = '/media/usb';

/** Two loopback ports side by side: the fleet gives machine i the port + i. */
async function freePair(): Promise<number> {
  for (;;) {
    const p = await freePort();
    const free = await new Promise<boolean>((res) => {
      const s = createServer();
      s.once('error', () => res(false));
      s.listen(p + 1, '127.0.0.1', () => s.close(() => res(true)));
    });
    if (free) return p;
  }
}

describe('one repository, two machines on two virtual NASes, rolled out canary first; a site controller pulling from a registry (Debian example)', () => {
  let work: string;
  let repo: string;
  let env: Record<string, string>;
  let home: string;
  let state: string;
  let ctrl: RunningController;
  let setup: string;
  const log = (m: string) => console.log(`[fleet e2e] ${m}`);

  const git = async (...args: string[]) => {
    const r = await execa('git', ['-c', 'user.name=Tess', '-c', 'user.email=tess@example.invalid', ...args], { cwd: repo, reject: false });
    if (r.exitCode !== 0) throw new Error(`git ${args.join(' ')} failed: ${r.stderr}`);
    return r.stdout.trim();
  };
  /** Commits files (content, or [content, mode]; null deletes it); returns the commit. */
  const commit = async (files: Record<string, string | [string, number] | null>, message: string) => {
    for (const [f, spec] of Object.entries(files)) {
      if (spec === null) {
        rmSync(join(repo, f), { force: true });
        continue;
      }
      const [content, mode] = Array.isArray(spec) ? spec : [spec, 0o644];
      mkdirSync(join(repo, f, '..'), { recursive: true });
      writeFileSync(join(repo, f), content, { mode });
    }
    await git('add', '-A');
    await git('commit', '-q', '-m', message);
    return git('rev-parse', 'HEAD');
  };
  const historyOf = async (m: string) => (await (await fetch(`${ctrl.api}/machines/${m}/api/history`)).json()) as ReconcileRecord[];
  /** The machine's finished reconcile of a commit. */
  const doneOn = async (m: string, commit: string, timeoutMs: number): Promise<ReconcileRecord> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = (await historyOf(m).catch(() => [])).find((h) => h.commit === commit && h.state === 'done');
      if (r) return r;
      if (Date.now() > end) throw new Error(`machine ${m}: no finished reconcile of ${commit.slice(0, 12)} within ${timeoutMs / 1000} s:\n${tail(ctrl.log)}`);
      await new Promise((res) => setTimeout(res, 1000));
    }
  };
  const vmOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'vm', 'vm.json'), 'utf8')) as { sshPort: number; httpPort: number };
  /** The build a machine runs, from its own status page. */
  const runs = async (dir: string) => /^build=(\S+)$/m.exec(await (await fetch(`http://127.0.0.1:${vmOf(dir).httpPort}/release`)).text())?.[1];
  /** sha256 of every file on a machine's medium. */
  const listing = async (dir: string, buildId: string) => {
    const manifest = JSON.parse(readFileSync(join(dir, 'images', buildId, 'manifest.json'), 'utf8'));
    const s = await connect({ name: 'nas', address: '127.0.0.1', port: vmOf(dir).sshPort, user: 'root', identityFile: join(home, '.config/ramboot/id_ed25519'), hostKey: manifest.hostKey });
    try {
      return await s.check('list the medium', `cd ${MEDIUM} && find . -type f | sort | xargs sha256sum`);
    } finally {
      s.close();
    }
  };
  const machineDir = (m: string) => join(state, 'machines', m);

  beforeAll(async () => {
    work = tempDir('fleet-e2e');
    ({ repo, env, home } = await initRepo('debian'));
    const c = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
    c.trial = { confirm_timeout: '4m', reboot_deadline: '6m' };
    // The example's status page check asks the host's forwarded port 8080; each machine here has its own. The built-in checks stay (SSH, every service started).
    c.health = { deadline: '2m', checks: [] };
    c.rollout = { canary: 'b' };
    writeFileSync(join(repo, 'ramboot.yaml'), stringify(c));
    setup = readFileSync(join(repo, 'setup.sh'), 'utf8');
    const head = await commit({ 'machines/a/ramboot.yaml': 'host:\n  name: nas-a\n', 'machines/b/ramboot.yaml': 'host:\n  name: nas-b\n' }, 'two machines, canary b');
    state = join(work, 'state');
    const t = Date.now();
    ctrl = await startController(['--repo', repo, '--ssh-port', String(await freePair()), '--http-port', String(await freePair())], {
      state,
      listen: await freePort(),
      env: { ...env, RAMBOOT_CACHE: join(SHARED_STATE, 'cache') },
      logFile: join(work, 'controller.log'),
    });
    for (const m of ['b', 'a']) expect((await doneOn(m, head, 15 * MINUTES)).outcome).toBe('promoted');
    log(`start: two virtual NASes formatted and booted, the first rollout done, in ${Math.round((Date.now() - t) / 1000)} s`);
  }, 25 * MINUTES);

  afterAll(async () => {
    // SIGTERM stops the fleet's virtual NASes with it (the site's tests stopped it already).
    if (ctrl && ctrl.proc.exitCode === null) await ctrl.kill('SIGTERM');
  });

  it('1: a change to the shared root/ deploys both machines through their trials, the canary b first, then a', async () => {
    const t = Date.now();
    const change = await commit({ 'root/etc/fleet-test': 'shared, first change\n' }, 'a shared change');
    const b = await doneOn('b', change, 12 * MINUTES);
    const a = await doneOn('a', change, 12 * MINUTES);
    log(`shared change: b ${Math.round((Date.parse(b.endedAt!) - Date.parse(b.startedAt!)) / 1000)} s, then a ${Math.round((Date.parse(a.endedAt!) - Date.parse(a.startedAt!)) / 1000)} s (${Math.round((Date.now() - t) / 1000)} s in all)`);
    expect([b.outcome, a.outcome]).toEqual(['promoted', 'promoted']);
    expect(Date.parse(a.startedAt!)).toBeGreaterThanOrEqual(Date.parse(b.endedAt!));
    for (const [m, r] of [['a', a], ['b', b]] as const) {
      expect(r.bytesSent, m).toBeGreaterThan(0);
      expect(await runs(machineDir(m))).toBe(r.buildId);
    }
  }, 25 * MINUTES);

  it('1: a change to one machine\'s files deploys only that one: the other records no change, its medium untouched', async () => {
    const bBuild = (await historyOf('b')).find((r) => r.state === 'done' && r.outcome === 'promoted' && r.buildId)!.buildId!;
    const before = await listing(machineDir('b'), bBuild);
    const change = await commit({ 'machines/a/root/etc/motd': 'machine a only\n' }, 'a change to machine a');
    const b = await doneOn('b', change, 12 * MINUTES);
    const a = await doneOn('a', change, 12 * MINUTES);
    expect(b.outcome).toBe('promoted');
    expect(b.message).toMatch(/^nothing changes on b: build \S+ has the inputs of build \S+, which it runs; not deployed$/);
    expect(b.bytesSent).toBeUndefined();
    expect(await listing(machineDir('b'), bBuild)).toBe(before);
    expect(await runs(machineDir('b'))).toBe(bBuild);
    expect(a.outcome).toBe('promoted');
    expect(await runs(machineDir('a'))).toBe(a.buildId);
  }, 25 * MINUTES);

  it('2: a commit whose health check fails on the canary: b is rolled back, a is never touched, and its history names b and the reason', async () => {
    const aBuild = await runs(machineDir('a'));
    const bBuild = await runs(machineDir('b'));
    const before = await listing(machineDir('a'), aBuild!);
    const bad = await commit(crashingService(setup), 'a service that crashes, on every machine');
    const b = await doneOn('b', bad, 12 * MINUTES);
    const a = await doneOn('a', bad, 2 * MINUTES);
    expect(b.outcome).toBe('trial-not-healthy');
    expect(b.message).toMatch(/flaky: (crashed|stopped)/);
    expect(await runs(machineDir('b'))).toBe(bBuild);
    expect(a.outcome).toBe('rollout-stopped');
    expect(a.message).toMatch(/\bb\b.*trial-not-healthy.*flaky/s);
    expect(a.startedAt).toBeUndefined();
    expect(await listing(machineDir('a'), aBuild!)).toBe(before);
    const fleet = (await (await fetch(`${ctrl.api}/api/status`)).json()) as FleetStatus;
    for (const m of fleet.machines) expect(m.quarantine.map((q) => q.commit), m.machine).toContain(bad);
  }, 25 * MINUTES);

  describe('3: a site controller (`ramboot up --registry`) deploying what `ramboot publish` pushed to a real registry', () => {
    let registry: TestRegistry;
    let site: ResultPromise;
    let siteOut = '';
    let siteState: string;
    const ref = () => `${registry.host}/nas/a:live`;
    /** Publishes HEAD: machine a to nas/a:live, or (every machine) each to nas/MACHINE:live. */
    const publish = async (which: string[] = ['--machine', 'a', '--registry', ref()]) => {
      const r = await ramboot(['publish', '--repo', repo, '--state', state, ...which], { ...env, RAMBOOT_CACHE: join(SHARED_STATE, 'cache') });
      expect(r.exitCode, r.stderr).toBe(0);
      const m = /^published build (\S+) of machine a to \S+\/nas\/a:\w+@(sha256:[0-9a-f]{64})/m.exec(r.stdout)!;
      expect(m, r.stdout).not.toBeNull();
      return { buildId: m[1]!, digest: m[2]!, stdout: r.stdout };
    };
    const siteRecord = () => JSON.parse(readFileSync(join(siteState, 'site.json'), 'utf8')) as SiteRecord;
    const siteDone = async (digest: string, timeoutMs: number): Promise<SiteRecord> => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const r = await Promise.resolve().then(siteRecord).catch(() => undefined);
        if (r?.digest === digest) return r;
        if (site.exitCode !== null || Date.now() > end) throw new Error(`the site controller did not finish with ${digest}:\n${siteOut.slice(-4000)}`);
        await new Promise((res) => setTimeout(res, 1000));
      }
    };

    beforeAll(async () => {
      // The fleet's machines stop with it: the site's virtual NAS is the only one running.
      await ctrl.kill('SIGTERM');
      await commit({ 'root/etc/init.d/flaky': null, 'setup.sh': [setup, 0o755] }, 'no more crashing service');
      registry = await startRegistry();
      // Every machine of the repository, each to a registry repository of its own.
      const first = await publish(['--registry', `${registry.host}/nas:live`]);
      expect(first.stdout).toMatch(/^published build \S+ of machine b to \S+\/nas\/b:live@sha256:/m);
      siteState = join(work, 'site');
      // No repository here: the identity that opens the sealed secrets is given.
      const identity = join(home, '.config/ramboot/identity.txt');
      site = execa('node', [CLI, 'up', '--registry', ref(), '--identity', identity, '--state', siteState, '--ssh-port', String(await freePort()), '--http-port', String(await freePort())], {
        reject: false,
        stdin: 'ignore',
        env: { ...process.env, ...env },
      });
      site.stdout!.on('data', (d: Buffer) => (siteOut += d));
      site.stderr!.on('data', (d: Buffer) => (siteOut += d));
      const r = await siteDone(first.digest, 15 * MINUTES);
      expect(r).toMatchObject({ buildId: first.buildId, outcome: 'promoted' });
      // The banner follows the first poll.
      const end = Date.now() + 60_000;
      while (!/^ramboot deploys nas-a from \S+ \(a site controller: it pulls, never builds/m.test(siteOut) && Date.now() < end) await new Promise((res) => setTimeout(res, 500));
      expect(siteOut).toMatch(/^ramboot deploys nas-a from \S+ \(a site controller: it pulls, never builds/m);
    }, 20 * MINUTES);

    afterAll(async () => {
      if (site?.pid && site.exitCode === null) process.kill(site.pid, 'SIGTERM');
      await site;
      await registry?.stop();
    });

    it('a root/-only change published: the site pulls only the changed file, deploys it through the trial, and the machine runs it', async () => {
      const imageBytes = (dir: string, id: string) => {
        const m = JSON.parse(readFileSync(join(dir, 'images', id, 'manifest.json'), 'utf8'));
        return m.kernel.bytes + m.segments.reduce((n: number, s: { bytes: number }) => n + s.bytes, 0);
      };
      await commit({ 'machines/a/root/etc/motd': 'machine a, published\n' }, 'a root/ change for the registry');
      const from = siteOut.length;
      const next = await publish();
      const r = await siteDone(next.digest, 12 * MINUTES);
      expect(r).toMatchObject({ buildId: next.buildId, outcome: 'promoted' });
      expect(await runs(siteState)).toBe(next.buildId);
      const said = siteOut.slice(from);
      const fetched = [...said.matchAll(/fetched (\S+) \(/g)].map((m) => m[1]);
      const manifest = JSON.parse(readFileSync(join(siteState, 'images', next.buildId, 'manifest.json'), 'utf8'));
      expect(fetched).toEqual([manifest.segments.find((s: { name: string }) => s.name === 'overlay').file]);
      const [, blobs, bytes, unit] = /pulled build \S+ from \S+: (\d+) blob\(s\), ([\d.]+) (B|KiB|MiB)/.exec(said)!;
      const pulled = Number(bytes) * { B: 1, KiB: 1024, MiB: 1024 * 1024 }[unit as 'B' | 'KiB' | 'MiB'];
      const image = imageBytes(siteState, next.buildId);
      log(`root/-only change: the site pulled ${blobs} blob(s), ${bytes} ${unit} (${((100 * pulled) / image).toFixed(2)}% of a ${image} B image)`);
      // The overlay, ramboot's manifest gzipped (the config blob, a few hundred KiB) and the OCI manifest: not the kernel, base or secrets.
      const overlay = manifest.segments.find((s: { name: string }) => s.name === 'overlay').bytes;
      expect(Number(blobs)).toBe(2);
      expect(pulled).toBeGreaterThan(overlay);
      expect(pulled).toBeLessThan(overlay + 1024 * 1024);
    }, 20 * MINUTES);

    it('a blob altered in the registry\'s storage is refused by digest: nothing is deployed, the machine keeps its build', async () => {
      const running = await runs(siteState);
      await commit({ 'machines/a/root/etc/motd': 'machine a, altered in the registry\n' }, 'a change whose blob will be altered');
      // Published to another tag first, its blob altered, and only then named by the tag the site follows.
      const next = await publish(['--machine', 'a', '--registry', `${registry.host}/nas/a:staged`]);
      const mediaType = 'application/vnd.oci.image.manifest.v1+json';
      const bytes = Buffer.from(await (await fetch(`http://${registry.host}/v2/nas/a/manifests/staged`, { headers: { accept: mediaType } })).arrayBuffer());
      const oci = JSON.parse(bytes.toString('utf8')) as OciManifest;
      const config = JSON.parse(gunzipSync(Buffer.from(await (await fetch(`http://${registry.host}/v2/nas/a/blobs/${oci.config.digest}`)).arrayBuffer())).toString('utf8'));
      const overlay = config.segments.find((s: { name: string }) => s.name === 'overlay').file;
      const layer = oci.layers.find((l) => l.annotations?.['org.opencontainers.image.title'] === overlay)!;
      const data = readFileSync(registry.blobPath(layer.digest));
      data[data.length >> 1] ^= 0xff;
      writeFileSync(registry.blobPath(layer.digest), data);
      const put = await fetch(`http://${registry.host}/v2/nas/a/manifests/live`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
      expect(put.status).toBe(201);
      const r = await siteDone(next.digest, 5 * MINUTES);
      expect(r.outcome).toBe('refused');
      expect(r.message).toMatch(new RegExp(`the blob of ${overlay} hashes to sha256:[0-9a-f]{64}, not ${layer.digest}; nothing was written`));
      expect(await runs(siteState)).toBe(running);
      expect(siteOut).not.toMatch(new RegExp(`deploying build ${next.buildId}`));
    }, 10 * MINUTES);
  });
});
