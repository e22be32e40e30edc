import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { compareSettings } from '../../plan/settings.js';
import { SHARED_STATE, initRepo, ramboot, tempDir, type Built } from '../helpers/ramboot.js';

// A build with secrets.at_rest: tpm: the secrets segment holds the secrets only encrypted
// to the enrolled machine's key and the repository's recipients. The enrollment here is
// made without a TPM (an age key of the test's own, random bytes for the sealed object):
// the build never opens the sealed object; test/image/sealed.test.ts seals and unseals
// with a real one (swtpm).

const git = (repo: string, ...args: string[]) => execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args]);

describe('a build with secrets.at_rest: tpm', () => {
  const marker = `ramboot-sealed-${randomBytes(12).toString('hex')}`;
  let repo: string;
  let env: Record<string, string>;
  let home: string;
  let machineIdentity: string;
  let machineRecipient: string;
  const images = join(tempDir('images'), 'images');
  const build = () => ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', images, '--json'], env);
  const setConfig = (fn: (c: Record<string, any>) => void) => {
    const c = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
    fn(c);
    writeFileSync(join(repo, 'ramboot.yaml'), stringify(c));
  };

  beforeAll(async () => {
    ({ repo, env, home } = await initRepo('debian'));
    const plain = join(tempDir('plain'), 'token');
    writeFileSync(plain, `${marker}\n`, { mode: 0o600 });
    const add = await ramboot(['secrets', 'add', 'etc/app/token', '--from', plain, '--repo', repo], env);
    expect(add.exitCode, add.stderr).toBe(0);
    machineIdentity = join(tempDir('machine'), 'identity.txt');
    execFileSync('age-keygen', ['-o', machineIdentity], { stdio: 'ignore' });
    machineRecipient = execFileSync('age-keygen', ['-y', machineIdentity], { encoding: 'utf8' }).trim();
  });

  it('without an enrolled machine, fails at once and says how to enroll; `ramboot check` says the same', async () => {
    setConfig((c) => (c.secrets.at_rest = 'tpm'));
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'at rest: tpm, nobody enrolled');
    const r = await build();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/secrets.at_rest is tpm, but no machine is enrolled \(tpm\/recipient is missing\); run `ramboot secrets enroll`/);
    const check = await ramboot(['check', '--repo', repo], env);
    expect(check.exitCode).toBe(1);
    expect(check.stdout + check.stderr).toMatch(/ramboot.yaml: secrets.at_rest is tpm, but no machine is enrolled/);
  }, 5 * 60_000);

  it('with an enrolled machine but an image without tpm2-tools, age and cpio, fails naming them and the packages to add', async () => {
    mkdirSync(join(repo, 'tpm'), { recursive: true });
    writeFileSync(join(repo, 'tpm/recipient'), `# a test machine\n${machineRecipient}\n`);
    writeFileSync(join(repo, 'tpm/sealed-key.pub'), randomBytes(90));
    writeFileSync(join(repo, 'tpm/sealed-key.priv'), randomBytes(160));
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'enrolled (a test key)');
    const check = await ramboot(['check', '--repo', repo], env);
    expect(check.stdout + check.stderr).not.toMatch(/at_rest/);
    const r = await build();
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/secrets.at_rest is tpm, and the image lacks tpm2_createprimary, .*age.*; add the packages that bring them to packages \(Debian: tpm2-tools age cpio/);
  }, 15 * 60_000);

  it('seals the secrets: the segment holds only ciphertext, the sealed object and the public authorized_keys; the machine\'s key and the repository\'s identity each open it', async () => {
    writeFileSync(join(repo, 'packages'), `${readFileSync(join(repo, 'packages'), 'utf8')}tpm2-tools\nage\ncpio\n`);
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'the tools to unseal');
    const r = await build();
    expect(r.exitCode, r.stderr).toBe(0);
    const built: Built = JSON.parse(r.stdout);
    const segment = execFileSync('zstd', ['-dc', join(built.imageDir, 'secrets.cpio.zst')]);
    expect(segment.includes(marker)).toBe(false);
    expect(/\$6\$/.test(segment.toString('latin1'))).toBe(false);
    expect(segment.includes('PRIVATE KEY')).toBe(false);
    const names = execFileSync('cpio', ['-it', '--quiet'], { input: segment, encoding: 'utf8' }).trim().split('\n').sort();
    expect(names).toEqual(['etc/ramboot/sealed/key.priv', 'etc/ramboot/sealed/key.pub', 'etc/ramboot/sealed/secrets.age', 'root/.ssh/authorized_keys']);
    const out = tempDir('unpacked');
    execFileSync('cpio', ['-idm', '--quiet'], { input: segment, cwd: out });
    expect(readFileSync(join(out, 'etc/ramboot/sealed/key.priv'))).toEqual(readFileSync(join(repo, 'tpm/sealed-key.priv')));
    for (const identity of [machineIdentity, join(home, '.config/ramboot/identity.txt')]) {
      const inner = execFileSync('age', ['-d', '-i', identity, join(out, 'etc/ramboot/sealed/secrets.age')]);
      expect(inner.includes(marker), identity).toBe(true);
      const listed = execFileSync('cpio', ['-it', '--quiet'], { input: inner, encoding: 'utf8' });
      expect(listed).toMatch(/etc\/app\/token/);
      expect(listed).toMatch(/etc\/ssh\/ssh_host_ed25519_key/);
      expect(listed).not.toMatch(/authorized_keys/);
    }
    const manifest = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8'));
    expect(manifest.sealed.recipients[0]).toBe(machineRecipient);
    const inOverlay = new Set(manifest.files.filter((f: { segment: string }) => f.segment === 'overlay').map((f: { path: string }) => f.path));
    for (const f of ['usr/sbin/ramboot-sealed', 'etc/init.d/ramboot-secrets', 'etc/runlevels/sysinit/ramboot-secrets', 'etc/ramboot/sealed/conf']) expect(inOverlay.has(f), f).toBe(true);

    // What `ramboot plan` shows between this image and one that keeps the secrets on the medium.
    const { sealed: _, ...onMedium } = manifest;
    expect(compareSettings(onMedium, manifest)).toEqual([
      { key: 'secrets.at_rest', before: 'medium', after: 'tpm' },
      { key: 'secrets sealed to (TPM recipient)', after: machineRecipient },
    ]);
    expect(compareSettings(manifest, { ...manifest, sealed: { recipients: ['age1other'] } })).toEqual([{ key: 'secrets sealed to (TPM recipient)', before: machineRecipient, after: 'age1other' }]);
  }, 15 * 60_000);
});
