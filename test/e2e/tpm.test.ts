import { execa } from 'execa';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../deploy/ssh.js';
import { readManifest } from '../../image/manifest.js';
import { decrypt } from '../../secrets/age.js';
import { readIdentityFile } from '../../secrets/identity.js';
import { tpmStatePath } from '../../vm/tpm.js';
import { startNas, type VirtualNas } from '../helpers/nas.js';
import { buildRepo, ramboot, tempDir, type Built } from '../helpers/ramboot.js';

// Secrets sealed to the machine's TPM, end to end: the virtual NAS with a real swtpm (its
// state beside the disk), the Debian example with tpm2-tools, age and cpio, the real
// `ramboot secrets enroll`, deploys with trial boots. One machine; each `it` leaves it
// running a known build from `lts`, and builds on the one before.

const MINUTES = 60_000;
const PACKAGES = ['tpm2-tools', 'age', 'cpio'];
const PROBE = `tpm-e2e-probe-${process.pid}-${Date.now()}`;

/** Every file of the BIOS disk's FAT, copied out with mtools. */
async function filesOnDisk(disk: string): Promise<Map<string, Buffer>> {
  const dir = mkdtempSync(join(tempDir('tpm-disk'), 'x-'));
  await execa('mcopy', ['-s', '-n', '-i', disk, '::/*', dir], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  const out = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(p.slice(dir.length + 1), readFileSync(p));
    }
  };
  walk(dir);
  rmSync(dir, { recursive: true, force: true });
  return out;
}

/**
 * sha256 of every file ramboot keeps on the medium (boot/), read from the disk image, not
 * through the machine. persist/ is the machine's own: its seedrng service writes a new
 * seed there on every boot, a recovery boot included.
 */
async function diskListing(disk: string): Promise<string> {
  const files = [...(await filesOnDisk(disk))].filter(([p]) => p.startsWith('boot/'));
  expect(files.length).toBeGreaterThan(5);
  return files.map(([p, b]) => `${createHash('sha256').update(b).digest('hex')}  ${p}`).sort().join('\n');
}

/** The bytes to search: a file as it is, and decompressed when it is zstd (a segment: newc archives, which hold file contents as they are). */
async function unpacked(data: Buffer): Promise<Buffer[]> {
  if (data.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) {
    const r = await execa('zstd', ['-d', '-c'], { input: data, encoding: 'buffer', maxBuffer: 2 ** 31 });
    return [data, Buffer.from(r.stdout as Uint8Array)];
  }
  return [data];
}

/** The files of a newc archive (one, as the secrets segment is), by path. */
function newcFiles(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const align = (n: number) => (n + 3) & ~3;
  let off = 0;
  while (off + 110 <= buf.length && buf.toString('latin1', off, off + 6) === '070701') {
    const field = (i: number) => parseInt(buf.toString('latin1', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [size, nameSize] = [field(6), field(11)];
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    const data = align(off + 110 + nameSize);
    if (name === 'TRAILER!!!') break;
    out.set(name, buf.subarray(data, data + size));
    off = align(data + size);
  }
  return out;
}

describe('secrets sealed to the virtual NAS\'s TPM (real swtpm, tpm2-tools and age; Debian example with secrets.at_rest: tpm)', () => {
  let nas: VirtualNas;
  let current: Built;
  /** Probes: the probe secret, root's password hash, the private host key's base64 body. */
  let probes: string[] = [];
  let recoveryKey = '';
  const outputs: string[] = [];
  const cli = async (args: string[]) => {
    const r = await nas.cli(args);
    outputs.push(r.stdout, r.stderr);
    return r;
  };

  beforeAll(async () => {
    nas = await startNas('tpm e2e', { tpm: true, packages: PACKAGES });
    current = nas.first;
    // Enroll commits with the git CLI, as its user: this one has no git identity of its own.
    Object.assign(nas.env, { GIT_AUTHOR_NAME: 'test', GIT_AUTHOR_EMAIL: 'test@example.invalid', GIT_COMMITTER_NAME: 'test', GIT_COMMITTER_EMAIL: 'test@example.invalid' });
  }, 20 * MINUTES);

  afterAll(async () => {
    await nas?.stop();
  });

  it('1: enroll, deploy, promote: the machine unseals its secrets and presents the pinned host key; the disk holds no plaintext of a secret', async () => {
    const add = await ramboot(['secrets', 'add', 'etc/ramboot/probe', '--repo', nas.repo], nas.env, `${PROBE}\n`);
    expect(add.exitCode, add.stderr).toBe(0);
    // The machine was formatted, not deployed to: no journal pins its key yet, so the user names it.
    const enroll = await cli(['secrets', 'enroll', '--repo', nas.repo, ...nas.reach(), '--host-key', nas.hostKey]);
    expect(enroll.code, enroll.stderr).toBe(0);
    expect(enroll.stdout).toMatch(/^enrolled nas: its secrets are sealed to age1\w+/);
    const recorded = readFileSync(join(nas.repo, 'tpm/recipient'), 'utf8');
    expect(readFileSync(join(nas.repo, 'ramboot.yaml'), 'utf8')).toMatch(/at_rest: tpm/);
    const { stdout: show } = await execa('git', ['show', '--stat', '--format=%s', 'HEAD'], { cwd: nas.repo });
    expect(show).toMatch(/Seal the secrets to nas's TPM[\s\S]*tpm\/recipient[\s\S]*tpm\/sealed-key.priv/);

    const b = await nas.change({}, 'a probe secret, sealed');
    const manifest = await readManifest(b.imageDir);
    expect(manifest.sealed?.recipients[0]).toBe(recorded.split('\n').find((l) => l.startsWith('age1')));
    const r = await nas.deploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    current = b;
    // nas.sh pins the host key of the repository's secret: the machine unsealed it.
    expect(await nas.sh('cat /etc/ramboot/probe')).toBe(`${PROBE}\n`);
    expect(await nas.sh('test -e /etc/ramboot/sealed/unavailable && echo recovery || echo unsealed')).toBe('unsealed\n');

    // What the probes are: opened offline with the repository's identity, as its holder can.
    const seg = await unpacked(readFileSync(join(b.imageDir, 'secrets.cpio.zst')));
    const identities = await readIdentityFile(join(nas.env.HOME!, '.config/ramboot/identity.txt'));
    const inSegment = newcFiles(seg[1]!);
    expect([...inSegment.keys()].sort()).toEqual(['etc/ramboot/sealed/key.priv', 'etc/ramboot/sealed/key.pub', 'etc/ramboot/sealed/secrets.age', 'root/.ssh/authorized_keys']);
    const archive = Buffer.from(await decrypt(inSegment.get('etc/ramboot/sealed/secrets.age')!, identities));
    const hash = /\$6\$[^\s:]+/.exec(archive.toString('latin1'))?.[0];
    // The second line: the first is the same in every unencrypted ed25519 key.
    const hostKeyBody = /-----BEGIN OPENSSH PRIVATE KEY-----\n[^\n]+\n([^\n]+)/.exec(archive.toString('latin1'))?.[1];
    expect(archive.toString('latin1')).toContain(PROBE);
    probes = [PROBE, hash!, hostKeyBody!];
    expect(probes.every(Boolean)).toBe(true);

    const raw = readFileSync(nas.disk);
    for (const p of probes) expect(raw.includes(p), `raw disk holds ${p.slice(0, 12)}`).toBe(false);
    const files = await filesOnDisk(nas.disk);
    expect(files.size).toBeGreaterThan(5);
    for (const [path, data] of files) {
      for (const bytes of await unpacked(data)) for (const p of probes) expect(bytes.includes(p), `${path} holds ${p.slice(0, 12)}`).toBe(false);
    }
  }, 30 * MINUTES);

  it('2: the same disk with a fresh swtpm: nothing is decrypted, the machine runs a recovery boot reachable over SSH, the verdict names the problem and the fix, the medium is unchanged', async () => {
    await nas.vm.stop();
    const before = await diskListing(nas.disk);
    renameSync(tpmStatePath(nas.disk), `${tpmStatePath(nas.disk)}.enrolled`);
    await nas.restart();

    const r = await nas.deploy(current.imageDir);
    outputs.push(r.stdout, r.stderr);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toMatch(/sealed secrets unavailable on nas: its TPM could not unseal/);
    expect(r.stdout).not.toMatch(/esys:src/);
    expect(r.stdout).toMatch(/re-enroll: `ramboot secrets enroll --host-key 'ssh-ed25519 \S+'`/);
    recoveryKey = /--host-key '(ssh-ed25519 \S+)'/.exec(r.stdout)![1]!;
    expect(recoveryKey.split(' ')[1]).not.toBe(nas.hostKey.split(' ')[1]);

    const s = await connect({ name: 'nas', address: '127.0.0.1', port: nas.sshPort, user: 'root', identityFile: join(nas.env.HOME!, '.config/ramboot/id_ed25519'), hostKey: recoveryKey });
    try {
      expect(await s.check('look', 'test -e /etc/ramboot/probe && echo present || echo absent')).toBe('absent\n');
      expect(await s.check('look', 'cat /etc/ramboot/sealed/unavailable')).toMatch(/\S/);
      // The status page (a service of the default runlevel) is not started on a recovery boot.
      expect(await s.check('look', 'ls /etc/runlevels/default')).not.toMatch(/monitor/);
      expect(await s.check('look', 'pidof monitor || echo none')).toBe('none\n');
    } finally {
      s.close();
    }
    expect(await diskListing(nas.disk)).toBe(before);
  }, 20 * MINUTES);

  it('3: enrolled again on the fresh swtpm and deployed, the machine has its secrets again; the repository records the new key in place of the old', async () => {
    expect(recoveryKey).not.toBe('');
    const old = readFileSync(join(nas.repo, 'tpm/recipient'), 'utf8');
    const oldSealed = readFileSync(join(nas.repo, 'tpm/sealed-key.priv'));
    const enroll = await cli(['secrets', 'enroll', '--repo', nas.repo, ...nas.reach(), '--host-key', recoveryKey]);
    expect(enroll.code, enroll.stderr).toBe(0);
    expect(readFileSync(join(nas.repo, 'tpm/recipient'), 'utf8')).not.toBe(old);
    expect(readFileSync(join(nas.repo, 'tpm/sealed-key.priv')).equals(oldSealed)).toBe(false);
    const b = await buildRepo(nas.repo, nas.images, nas.env);
    const r = await nas.deploy(b.imageDir, ['--host-key', recoveryKey]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    current = b;
    expect(await nas.sh('cat /etc/ramboot/probe')).toBe(`${PROBE}\n`);
    expect(await nas.running()).toMatchObject({ build: b.buildId });
    expect((await nas.slots()).lts?.buildId).toBe(b.buildId);
  }, 20 * MINUTES);

  it('4: a trial that fails health with sealed secrets is rolled back, and the default unseals again', async () => {
    const good = current;
    nas.settings({ checks: [{ name: 'marker present', cmd: 'ls /nonexistent-marker', retries: 1, period: '5s' }] });
    try {
      const b = await nas.change({ 'root/etc/deploy-test': 'unhealthy change\n' }, 'a change whose health check fails');
      const r = await nas.deploy(b.imageDir);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(12);
      expect(await nas.running()).toMatchObject({ slot: 'lts', build: good.buildId });
      expect(await nas.sh('cat /etc/ramboot/probe')).toBe(`${PROBE}\n`);
    } finally {
      nas.settings();
    }
  }, 25 * MINUTES);

  it('5: no log, no command output and nothing in the state directory holds a secret in plaintext', async () => {
    expect(probes.length).toBe(3);
    const texts: [string, Buffer][] = outputs.map((o, i) => [`command output ${i}`, Buffer.from(o)]);
    texts.push(['serial console', readFileSync(join(nas.work, 'serial.log'))]);
    const walk = (d: string): void => {
      if (!existsSync(d)) return;
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        const st = statSync(p);
        if (st.isDirectory()) walk(p);
        else if (st.isFile()) texts.push([p, readFileSync(p)]);
      }
    };
    walk(nas.stateDir);
    expect(texts.length).toBeGreaterThan(3);
    for (const [where, bytes] of texts) for (const p of probes) expect(bytes.includes(p), `${where} holds ${p.slice(0, 12)}`).toBe(false);
  });
});
