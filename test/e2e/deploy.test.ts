import { execa } from 'execa';
import { generateKeyPairSync } from 'node:crypto';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployCommand } from '../../src/deploy/commands.js';
import { readRunning, readSlots, type Running } from '../../src/deploy/medium.js';
import { requestReboot, waitUntil } from '../../src/deploy/reboot.js';
import { connect, type Target } from '../../src/deploy/ssh.js';
import { startVm, type Vm } from '../../src/vm/qemu.js';
import { buildRepo, freePort, initRepo, ramboot, tempDir, type Built } from '../helpers/ramboot.js';

// The deploy protocol of DESIGN.md §4 on the virtual NAS with the Debian example: one
// machine, booted once from a formatted stick, then deployed to again and again. Each
// `it` leaves the machine running a known build from `lts` for the next one.

const MEDIUM = '/media/usb';

let original: Record<string, any>;

/** The repo's ramboot.yaml from `ramboot init`, with the forwarded HTTP port, short deadlines and extra checks. */
function yaml(httpPort: number, o: { confirm?: string; checks?: Record<string, unknown>[] } = {}): string {
  const c = structuredClone(original);
  c.trial = { confirm_timeout: o.confirm ?? '3m', reboot_deadline: '6m' };
  c.health = {
    deadline: '2m',
    checks: [{ name: 'status page', http: `http://127.0.0.1:${httpPort}/release`, body: 'ramboot.slot=new' }, ...(o.checks ?? [])],
  };
  return stringify(c);
}

/** A public key no machine has: what a different machine (or a man in the middle) would present. */
function strangerKey(): string {
  const jwk = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' });
  const raw = Buffer.from(jwk.x!, 'base64url');
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]).toString('base64')}`;
}

function sink(): { stream: NodeJS.WriteStream; text: () => string } {
  let buf = '';
  const w = new Writable({
    write(chunk, _enc, cb) {
      buf += String(chunk);
      cb();
    },
  });
  return { stream: w as unknown as NodeJS.WriteStream, text: () => buf };
}

describe('deploying to the virtual NAS (Debian example)', () => {
  let vm: Vm;
  let repo: string;
  let env: Record<string, string>;
  let work: string;
  let images: string;
  let stateDir: string;
  let identity: string;
  let sshPort: number;
  let httpPort: number;
  let first: Built;
  let current: Built;
  const t0 = Date.now();
  const log = (m: string) => console.log(`[deploy e2e +${Math.round((Date.now() - t0) / 1000)} s] ${m}`);

  const target = (hostKey: string): Target => ({ name: 'nas', address: '127.0.0.1', port: sshPort, user: 'root', identityFile: identity, hostKey });
  const hostKeyOf = (b: Built): string => JSON.parse(readFileSync(join(b.imageDir, 'manifest.json'), 'utf8')).hostKey;

  async function git(...args: string[]) {
    await execa('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.invalid', ...args], { cwd: repo });
  }
  async function change(files: Record<string, string>, message: string): Promise<Built> {
    for (const [f, text] of Object.entries(files)) {
      mkdirSync(join(repo, f, '..'), { recursive: true });
      writeFileSync(join(repo, f), text);
    }
    await git('add', '-A');
    await git('commit', '-q', '-m', message);
    const t = Date.now();
    const b = await buildRepo(repo, images, env);
    log(`built ${b.buildId} (${message}) in ${Math.round((Date.now() - t) / 1000)} s`);
    return b;
  }
  async function runDeploy(image: string, extra: { hostKey?: string } = {}) {
    const out = sink();
    const err = sink();
    const t = Date.now();
    const code = await deployCommand({ repo, image, stateDir, address: '127.0.0.1', port: sshPort, identity, stdout: out.stream, stderr: err.stream, ...extra });
    log(`deploy ${image.split('/').pop()} → exit ${code} in ${Math.round((Date.now() - t) / 1000)} s\n${out.text()}`);
    return { code, stdout: out.text(), stderr: err.text(), ms: Date.now() - t };
  }
  async function look(b: Built): Promise<Running> {
    const s = await connect(target(hostKeyOf(b)));
    try {
      return await readRunning(s);
    } finally {
      s.close();
    }
  }
  async function slots(b: Built) {
    const s = await connect(target(hostKeyOf(b)));
    try {
      return await readSlots(s, MEDIUM);
    } finally {
      s.close();
    }
  }
  async function mediumListing(b: Built): Promise<string> {
    const s = await connect(target(hostKeyOf(b)));
    try {
      return await s.check('list the medium', `cd ${MEDIUM} && find . -type f | sort | xargs sha256sum`);
    } finally {
      s.close();
    }
  }

  beforeAll(async () => {
    ({ repo, env } = await initRepo('debian'));
    identity = join(env.HOME!, '.config/ramboot/id_ed25519');
    work = tempDir('deploy');
    images = join(work, 'images');
    stateDir = join(work, 'state');
    sshPort = await freePort();
    httpPort = await freePort();
    original = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
    writeFileSync(join(repo, 'ramboot.yaml'), yaml(httpPort));
    await git('add', '-A');
    await git('commit', '-q', '-m', 'deploy test settings');
    first = await buildRepo(repo, images, env);
    current = first;
    const disk = join(work, 'disk.img');
    const f = await ramboot(['format', '--disk', disk, '--image', first.imageDir], env);
    expect(f.exitCode, f.stderr).toBe(0);
    vm = startVm({ disk, sshPort, httpPort, serialLog: join(work, 'serial.log'), monitor: join(work, 'monitor.sock') });
    const ms = await vm.waitForSsh(8 * 60_000);
    log(`first boot answered SSH after ${Math.round(ms / 1000)} s; serial log ${join(work, 'serial.log')}`);
  }, 20 * 60_000);

  afterAll(async () => {
    await vm?.stop();
  });

  it('6: refuses a machine presenting a different host key before writing anything', async () => {
    const before = await mediumListing(first);
    // The image says which key the machine must present; this one says a key no machine has.
    const forged = join(work, 'forged');
    cpSync(first.imageDir, forged, { recursive: true });
    const m = JSON.parse(readFileSync(join(forged, 'manifest.json'), 'utf8'));
    m.hostKey = strangerKey();
    m.buildId = `${m.buildId}-forged`;
    writeFileSync(join(forged, 'manifest.json'), JSON.stringify(m));
    const r = await runDeploy(forged, { hostKey: strangerKey() });
    expect(r.code).toBe(11);
    expect(`${r.stdout}${r.stderr}`).toMatch(/host key/i);
    expect(await mediumListing(first)).toBe(before);
    const now = await look(first);
    expect(now.slot).toBe('lts');
    expect(now.build).toBe(first.buildId);
  }, 5 * 60_000);

  it('1, 7: promotes a healthy root/-only change, uploading only overlay and secrets; a plain reboot keeps it', async () => {
    const b = await change({ 'root/etc/deploy-test': 'healthy change\n' }, 'a healthy root/ change');
    const r = await runDeploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^promoted: /);
    const pct = Number(/sent .* of a .* image, ([\d.]+)%/.exec(r.stdout)?.[1]);
    log(`sent ${pct}% of the image`);
    expect(pct).toBeLessThan(10);
    const table = await slots(b);
    expect(table.lts?.buildId).toBe(b.buildId);
    expect(table.old?.buildId).toBe(first.buildId);
    expect(table.new).toBeUndefined();
    // Only the segments that changed went over the wire: base and kernel were on the stick.
    const changed = b.segments.filter((s) => !first.segments.some((p) => p.sha256 === s.sha256));
    expect(changed.map((s) => s.name).sort().join(' ')).toMatch(/overlay/);
    expect(changed.some((s) => /base/.test(s.name))).toBe(false);
    const running = await look(b);
    expect(running.build).toBe(b.buildId);
    // The plain reboot: lts is the new build now.
    const s = await connect(target(hostKeyOf(b)));
    const bootId = (await readRunning(s)).bootId;
    await requestReboot(s);
    s.close();
    const t = Date.now();
    const back = await waitUntil(target(hostKeyOf(b)), 6 * 60_000, (x) => x.bootId !== bootId);
    log(`plain reboot back after ${Math.round((Date.now() - t) / 1000)} s`);
    expect(back.running?.slot).toBe('lts');
    expect(back.running?.build).toBe(b.buildId);
    expect(back.running?.cmdlineBuild).toBe(b.buildId);
    current = b;
  }, 20 * 60_000);

  it('2: rolls back a change whose health check fails, naming the check and showing its output', async () => {
    const good = current;
    writeFileSync(
      join(repo, 'ramboot.yaml'),
      yaml(httpPort, { checks: [{ name: 'marker present', cmd: 'ls /nonexistent-marker', retries: 1, period: '5s' }] }),
    );
    const b = await change({ 'root/etc/deploy-test': 'unhealthy change\n' }, 'a change whose health check fails');
    const r = await runDeploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(12);
    expect(r.stdout).toMatch(/trial not healthy/);
    expect(r.stdout).toContain('marker present');
    expect(r.stdout).toMatch(/nonexistent-marker/);
    const running = await look(good);
    expect(running.slot).toBe('lts');
    expect(running.build).toBe(good.buildId);
    const table = await slots(good);
    expect(table.lts?.buildId).toBe(good.buildId);
    expect(table.new).toBeUndefined();
  }, 20 * 60_000);

  it('3: a trial whose network never comes up is rebooted into lts by the agent; the verdict says unreachable', async () => {
    const good = current;
    writeFileSync(join(repo, 'ramboot.yaml'), yaml(httpPort, { confirm: '90s' }));
    const b = await change(
      { 'root/etc/network/interfaces': 'auto lo\niface lo inet loopback\n\n# broken: no such interface\nauto eth9\niface eth9 inet static\n\taddress 10.0.9.15/24\n' },
      'a change that breaks the network',
    );
    const r = await runDeploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(13);
    expect(r.stdout).toMatch(/trial unreachable \(rolled back\)/);
    const running = await look(good);
    expect(running.slot).toBe('lts');
    expect(running.build).toBe(good.buildId);
    expect((await slots(good)).lts?.buildId).toBe(good.buildId);
    // The controller never reached the trial, so only the agent can have rebooted it: the
    // console shows the trial boot followed by a boot of lts.
    const boots = [...vm.serial().matchAll(/^\[\s*0\.0+\] Command line: .*ramboot\.slot=(\w+) ramboot\.build=(\S+)/gm)].map((m) => `${m[1]} ${m[2]}`);
    expect(boots.slice(-2)).toEqual([`new ${b.buildId}`, `lts ${good.buildId}`]);
    expect(r.stdout).toMatch(/came back on slot lts|did not answer/);
  }, 25 * 60_000);
});
