import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commitAll, git, makeRepo, writeFiles } from '../helpers/apk.js';
import { ramboot, tempDir, type CliResult } from '../helpers/ramboot.js';

// `ramboot check`, as CI runs it on a pull request: no identity anywhere (a HOME of its
// own, no $RAMBOOT_IDENTITY, no secrets.identity), real git repositories, the real CLI.

let work: string;
/** A HOME without ramboot's keys: nothing to decrypt with. */
let env: Record<string, string>;
let admin: string;
let second: string;
/** Repositories made here, each in a temporary directory of its own. */
const repos: string[] = [];

const FSTAB = '# the stick\nUUID=52A0-0B07  /media/usb  vfat  rw,noatime,fmask=0177,dmask=0077  0 0\n';

function ageKey(name: string): string {
  const file = join(work, name);
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
  return execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim();
}

function sshPrivateKey(name: string): string {
  const file = join(work, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file]);
  return readFileSync(file, 'utf8');
}

function config(recipients: string[], extra = ''): string {
  return `host:\n  name: nas\nsecrets:\n  recipients:\n${recipients.map((r) => `    - ${r}\n`).join('')}${extra}`;
}

/** A repository that passes: valid config, two secrets encrypted to it, a private fstab line. */
async function goodRepo(): Promise<string> {
  const repo = makeRepo({ 'ramboot.yaml': config([admin]), packages: 'alpine-base\n', 'root/etc/fstab': FSTAB, 'root/etc/hostname': 'nas\n' });
  repos.push(repo);
  writeFileSync(join(work, 'host.key'), sshPrivateKey(`host-${Math.random()}`));
  writeFileSync(join(work, 'token'), 'check-test-token\n');
  for (const [path, from] of [['etc/ssh/ssh_host_ed25519_key', 'host.key'], ['etc/api-token', 'token']] as const) {
    const r = await ramboot(['secrets', 'add', path, '--from', join(work, from), '--repo', repo], env);
    expect(r.exitCode, r.stderr).toBe(0);
  }
  commitAll(repo, 'secrets');
  return repo;
}

const check = (repo: string, ...args: string[]): Promise<CliResult> => ramboot(['check', '--repo', repo, ...args], env);
const head = (repo: string) => git(repo, 'rev-parse', 'HEAD').trim().slice(0, 12);

beforeAll(() => {
  work = tempDir('check');
  mkdirSync(join(work, 'home'));
  env = { HOME: join(work, 'home'), RAMBOOT_IDENTITY: '' };
  admin = ageKey('admin.key');
  second = ageKey('second.key');
});
afterAll(() => {
  for (const d of [work, ...repos.map((r) => dirname(r))]) rmSync(d, { recursive: true, force: true });
});

describe('ramboot check', () => {
  it('passes a repository whose secrets match ramboot.yaml, with no identity anywhere', async () => {
    const r = await check(await goodRepo());
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('ok: ramboot.yaml is valid; 2 secrets encrypted to its recipients; no plaintext private key in root/ or in 2 commits; the boot medium is mounted private');
    expect(r.exitCode).toBe(0);
  });

  it('fails on plaintext private keys in root/, naming each file', async () => {
    const repo = await goodRepo();
    writeFiles(repo, { 'root/etc/ssl/private/server.key': sshPrivateKey('server'), 'root/root/.ssh/id_ed25519': sshPrivateKey('root') });
    commitAll(repo, 'keys in the skeleton');
    // And one not committed yet, in the working tree.
    writeFiles(repo, { 'root/etc/wireguard/wg0.key': `AGE-SECRET-KEY-1${'Q'.repeat(58)}\n` });
    const r = await check(repo);
    expect(r.exitCode).toBe(1);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toEqual([
      `${head(repo)}:root/etc/ssl/private/server.key holds a plaintext private key (-----BEGIN OPENSSH PRIVATE KEY-----); it is in the history: remove it, rotate that key (every clone has it), and keep keys in secrets/ with \`ramboot secrets add\``,
      `${head(repo)}:root/root/.ssh/id_ed25519 holds a plaintext private key (-----BEGIN OPENSSH PRIVATE KEY-----); it is in the history: remove it, rotate that key (every clone has it), and keep keys in secrets/ with \`ramboot secrets add\``,
      'root/etc/wireguard/wg0.key holds a plaintext private key (AGE-SECRET-KEY-1); move it to secrets/ with `ramboot secrets add`',
      '3 problems',
    ]);
  });

  it('fails on a key committed and removed again, which stays in the history, unless --base is past it', async () => {
    const repo = await goodRepo();
    const before = head(repo);
    writeFiles(repo, { 'root/etc/leaked.key': sshPrivateKey('leaked') });
    const leaked = commitAll(repo, 'oops').slice(0, 12);
    git(repo, 'rm', '-q', 'root/etc/leaked.key');
    const removed = commitAll(repo, 'remove the key');
    const r = await check(repo, '--base', before);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain(`${leaked}:root/etc/leaked.key holds a plaintext private key`);
    const past = await check(repo, '--base', removed);
    expect(past.stdout).toMatch(/^ok: .* in 0 commits;/);
    expect(past.exitCode).toBe(0);
  });

  it('fails on secrets whose recipients are stale, naming each file and the fix', async () => {
    const repo = await goodRepo();
    writeFiles(repo, { 'ramboot.yaml': config([admin, second]) });
    commitAll(repo, 'a second admin, secrets not re-encrypted');
    const r = await check(repo);
    expect(r.exitCode).toBe(1);
    expect(r.stdout.trimEnd().split('\n')).toEqual([
      'secrets/etc/api-token.age is encrypted to 1×X25519 but ramboot.yaml lists 2×X25519; run `ramboot secrets rekey`',
      'secrets/etc/ssh/ssh_host_ed25519_key.age is encrypted to 1×X25519 but ramboot.yaml lists 2×X25519; run `ramboot secrets rekey`',
      '2 problems',
    ]);
  });

  it('lists every problem at once: the config line and key, the fstab line, a missing secret', async () => {
    const repo = await goodRepo();
    writeFiles(repo, {
      'root/etc/fstab': '# the stick\nUUID=52A0-0B07  /media/usb  vfat  rw,noatime,fmask=0133,dmask=0022  0 0\n',
      'ramboot.yaml': config([admin], 'secrets_files_typo: 1\n').replace('host:\n  name: nas\n', 'host:\n  name: nas\n'),
    });
    commitAll(repo, 'a typo');
    const bad = await check(repo);
    expect(bad.exitCode).toBe(1);
    expect(bad.stdout).toMatch(/^ramboot\.yaml, line 6, key secrets_files_typo: unknown key; allowed here: host, distro, /);

    writeFiles(repo, { 'ramboot.yaml': config([admin], '  files:\n    etc/wireguard/wg0.key:\n      mode: "0600"\n') });
    commitAll(repo, 'a secret configured but never added');
    const r = await check(repo);
    expect(r.exitCode).toBe(1);
    expect(r.stdout.trimEnd().split('\n')).toEqual([
      'secrets/etc/wireguard/wg0.key.age is missing; ramboot.yaml configures it (secrets.files.etc/wireguard/wg0.key)',
      'root/etc/fstab, line 2: fmask=0133 lets others read its files and dmask=0022 lets others list its directories: mount it with fmask=0177,dmask=0077',
      '2 problems',
    ]);
  });

  it('checks the commit given, not the working tree\'s ramboot.yaml', async () => {
    const repo = await goodRepo();
    const good = head(repo);
    writeFiles(repo, { 'ramboot.yaml': config([admin, second]) });
    commitAll(repo, 'stale');
    expect((await check(repo)).exitCode).toBe(1);
    expect((await check(repo, '--rev', good)).exitCode).toBe(0);
  });
});
