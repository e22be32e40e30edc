import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { generateInitialSecrets, secretsCommand } from '../../controller/cli/verbs/secrets.js';
import { CLI } from '../helpers/ramboot.js';
import {
  ageDecrypt,
  ageEncrypt,
  ageKeygen,
  io,
  makeRepo,
  recipientsYaml,
  sshFingerprintOf,
  sshKeygen,
  tempDir,
  writeConfig,
  writeRepoFile,
} from '../secrets/helpers.js';

const HOST_KEY = 'etc/ssh/ssh_host_ed25519_key';

async function repo() {
  const keys = await tempDir('ramboot-keys-');
  const controller = await ageKeygen(keys, 'controller.key');
  const admin = await sshKeygen(keys, 'admin');
  const dir = await makeRepo(recipientsYaml([controller.recipient, admin.publicLine]));
  const env = { RAMBOOT_IDENTITY: controller.file };
  const cmd = async (argv: string[], opts: { stdin?: string; env?: Record<string, string> } = {}) => {
    const c = io(dir, { ...env, ...opts.env }, opts.stdin ?? '');
    const code = await secretsCommand(argv, c);
    return { code, out: c.out(), err: c.err() };
  };
  const file = (path: string) => readFile(join(dir, 'secrets', `${path}.age`));
  return { dir, keys, controller, admin, env, cmd, file };
}

/** A repository whose secrets all check out: a host key and a token. */
async function healthyRepo() {
  const r = await repo();
  expect((await r.cmd(['add', HOST_KEY, '--generate', 'ssh-ed25519'])).code).toBe(0);
  expect((await r.cmd(['add', 'etc/app/token'], { stdin: 'token-value\n' })).code).toBe(0);
  return r;
}

describe('add: a new secret is encrypted to every configured recipient', () => {
  it('from stdin, written as secrets/PATH.age that the age CLI opens with any recipient key', async () => {
    const { cmd, file, controller, admin } = await repo();
    const r = await cmd(['add', 'etc/app/token'], { stdin: 's3cret\n' });
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(r.out).toContain('wrote secrets/etc/app/token.age (encrypted to 1×X25519, ssh-ed25519 admin@test)');
    expect(await ageDecrypt(await file('etc/app/token'), controller.file)).toBe('s3cret\n');
    expect(await ageDecrypt(await file('etc/app/token'), admin.file)).toBe('s3cret\n');
  });

  it('from --from FILE; the repository holds only the ASCII-armored ciphertext', async () => {
    const { cmd, file, keys, controller } = await repo();
    await writeFile(join(keys, 'plain'), 'from a file');
    expect((await cmd(['add', 'etc/x', '--from', join(keys, 'plain')])).code).toBe(0);
    const data = await file('etc/x');
    expect(data.toString()).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----/);
    expect(data.toString()).not.toContain('from a file');
    expect(await ageDecrypt(data, controller.file)).toBe('from a file');
  });

  it('--generate token and password give strong random values', async () => {
    const { cmd, file, controller } = await repo();
    await cmd(['add', 'a/token', '--generate', 'token']);
    await cmd(['add', 'a/password', '--generate', 'password']);
    expect(await ageDecrypt(await file('a/token'), controller.file)).toMatch(/^[0-9a-f]{64}\n$/);
    expect(await ageDecrypt(await file('a/password'), controller.file)).toMatch(/^[A-Za-z0-9]{24}\n$/);
  });

  it('--generate ssh-ed25519 for the host key prints the fingerprint ssh-keygen computes', async () => {
    const { cmd, file, controller, keys } = await repo();
    const r = await cmd(['add', HOST_KEY, '--generate', 'ssh-ed25519']);
    expect(r.code).toBe(0);
    const key = join(keys, 'host');
    await writeFile(key, await ageDecrypt(await file(HOST_KEY), controller.file), { mode: 0o600 });
    const { stdout: pub } = await execa('ssh-keygen', ['-y', '-f', key]);
    await writeFile(`${key}.pub`, pub);
    expect(r.out).toContain(`host key fingerprint: ${await sshFingerprintOf(`${key}.pub`)}`);
    expect(r.out).toContain(pub.split(' ').slice(0, 2).join(' '));
  });

  it('refuses to replace an existing secret unless --force', async () => {
    const { cmd, file, controller } = await repo();
    await cmd(['add', 'etc/x'], { stdin: 'one' });
    const again = await cmd(['add', 'etc/x'], { stdin: 'two' });
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/secrets\/etc\/x\.age exists; pass --force/);
    expect(await ageDecrypt(await file('etc/x'), controller.file)).toBe('one');
    expect((await cmd(['add', 'etc/x', '--force'], { stdin: 'two' })).code).toBe(0);
    expect(await ageDecrypt(await file('etc/x'), controller.file)).toBe('two');
  });

  it('per-secret recipients are added to the global ones, for that secret only', async () => {
    const { dir, cmd, file, keys, controller } = await repo();
    const service = await sshKeygen(keys, 'service');
    const admin = (await readFile(join(keys, 'admin.pub'), 'utf8')).trim();
    await writeConfig(
      dir,
      `${recipientsYaml([controller.recipient, admin])}  files:\n    etc/svc/key:\n      recipients:\n        - ${service.publicLine}\n`,
    );
    await cmd(['add', 'etc/svc/key'], { stdin: 'svc' });
    await cmd(['add', 'etc/other'], { stdin: 'other' });
    expect(await ageDecrypt(await file('etc/svc/key'), service.file)).toBe('svc');
    expect(await ageDecrypt(await file('etc/svc/key'), controller.file)).toBe('svc');
    await expect(ageDecrypt(await file('etc/other'), service.file)).rejects.toThrow();
  });

  it('leaves no temporary files beside the secret', async () => {
    const { dir, cmd } = await repo();
    await cmd(['add', 'etc/x'], { stdin: 'x' });
    await cmd(['add', 'etc/x', '--force'], { stdin: 'y' });
    expect(await readdir(join(dir, 'secrets/etc'))).toEqual(['x.age']);
  });

  it('refuses paths outside the image root', async () => {
    const { dir, cmd } = await repo();
    for (const path of ['../escape', 'etc/../../escape', '/etc/absolute']) {
      const r = await cmd(['add', path], { stdin: 'x' });
      expect(r.code).toBe(1);
      expect(r.err).toContain(`refusing secret ${JSON.stringify(path)}`);
    }
    await expect(readdir(join(dir, 'secrets'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses a host key that is not an ssh key, writing nothing', async () => {
    const { dir, cmd } = await repo();
    const r = await cmd(['add', HOST_KEY], { stdin: 'not a key' });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/OpenSSH ed25519 private key/);
    await expect(readdir(join(dir, 'secrets'))).rejects.toThrow(/ENOENT/);
  });

  it('wrong arguments exit 64 with the usage', async () => {
    const { cmd } = await repo();
    expect(await cmd(['add'])).toMatchObject({ code: 64, err: expect.stringContaining('usage: ramboot secrets add PATH') });
    expect((await cmd(['add', 'x', '--bogus'])).err).toMatch(/^ramboot secrets add: unknown option --bogus\n/);
    expect((await cmd(['add', 'x', '--generate', 'rsa'])).err).toContain('--generate must be one of ssh-ed25519, password, token, not "rsa"');
    expect(await cmd(['frobnicate'])).toMatchObject({ code: 64, err: expect.stringContaining('unknown verb "frobnicate"') });
  });

  it('a malformed recipient in ramboot.yaml stops the command with file, line and key', async () => {
    const { dir, cmd, controller } = await repo();
    await writeConfig(dir, recipientsYaml([controller.recipient, 'age1notakey']));
    const r = await cmd(['add', 'etc/x'], { stdin: 'x' });
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(dir, 'ramboot.yaml')}, line 6, key secrets.recipients.1`);
  });
});

describe('list: what each secret is, who can read it, and whether this identity can', () => {
  it('shows mode, recipients, decryptability and missing secrets', async () => {
    const { dir, cmd, keys, controller, admin } = await repo();
    await writeConfig(dir, `${recipientsYaml([controller.recipient, admin.publicLine])}  files:\n    etc/app/token:\n      mode: "0640"\n    etc/absent: {}\n`);
    await cmd(['add', 'etc/app/token'], { stdin: 't' });
    const stranger = await ageKeygen(keys, 'stranger.key');
    await writeRepoFile(dir, 'secrets/etc/foreign.age', await ageEncrypt('f', ['-a', '-r', stranger.recipient]));
    const r = await cmd(['list']);
    expect(r.code).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toMatch(/^PATH\s+MODE\s+RECIPIENTS\s+DECRYPTS\s+STATUS$/);
    expect(lines.find((l) => l.startsWith('etc/app/token'))).toMatch(/0640\s+1×X25519, ssh-ed25519 admin@test\s+yes\s+ok/);
    expect(lines.find((l) => l.startsWith('etc/foreign'))).toMatch(/0600\s+1×X25519\s+no\s+stale \(rekey\)/);
    expect(lines.find((l) => l.startsWith('etc/absent'))).toMatch(/missing \(secrets\/etc\/absent\.age\)/);
  });
});

describe('rekey: secrets follow the recipients in ramboot.yaml', () => {
  it('after adding a recipient, the new key can decrypt every secret', async () => {
    const { dir, cmd, file, keys, controller, admin } = await healthyRepo();
    const newcomer = await ageKeygen(keys, 'newcomer.key');
    await writeConfig(dir, recipientsYaml([controller.recipient, admin.publicLine, newcomer.recipient]));
    expect((await cmd(['check'])).out).toMatch(/token\.age: is encrypted to 1×X25519, ssh-ed25519 admin@test but ramboot\.yaml lists 2×X25519/);
    const r = await cmd(['rekey']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('wrote secrets/etc/app/token.age');
    expect(await ageDecrypt(await file('etc/app/token'), newcomer.file)).toBe('token-value\n');
    expect((await cmd(['check'])).code).toBe(0);
    expect((await cmd(['rekey'])).out).toContain('nothing to do');
  });

  it('after removing a recipient, that key can no longer decrypt', async () => {
    const { dir, cmd, file, controller, admin } = await healthyRepo();
    expect(await ageDecrypt(await file('etc/app/token'), admin.file)).toBe('token-value\n');
    await writeConfig(dir, recipientsYaml([controller.recipient]));
    expect((await cmd(['rekey'])).code).toBe(0);
    await expect(ageDecrypt(await file('etc/app/token'), admin.file)).rejects.toThrow(/no identity matched/);
    await expect(ageDecrypt(await file(HOST_KEY), admin.file)).rejects.toThrow(/no identity matched/);
    expect(await ageDecrypt(await file('etc/app/token'), controller.file)).toBe('token-value\n');
  });

  it('changes nothing when one secret cannot be decrypted, and says which', async () => {
    const { dir, cmd, file, keys, controller, admin } = await healthyRepo();
    const stranger = await ageKeygen(keys, 'stranger.key');
    await writeRepoFile(dir, 'secrets/etc/foreign.age', await ageEncrypt('f', ['-r', stranger.recipient]));
    const newcomer = await ageKeygen(keys, 'newcomer.key');
    await writeConfig(dir, recipientsYaml([controller.recipient, admin.publicLine, newcomer.recipient]));
    const before = await Promise.all(['etc/app/token', HOST_KEY, 'etc/foreign'].map(file));
    const r = await cmd(['rekey']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/nothing changed.*\n.*secrets\/etc\/foreign\.age/);
    const after = await Promise.all(['etc/app/token', HOST_KEY, 'etc/foreign'].map(file));
    after.forEach((a, i) => expect(a.equals(before[i]!)).toBe(true));
  });

  it('--all re-encrypts even secrets whose header looks current (an age1 key swapped for another)', async () => {
    const { dir, cmd, file, keys, admin } = await healthyRepo();
    const replacement = await ageKeygen(keys, 'replacement.key');
    // The controller keeps its identity via the ssh admin key.
    await writeConfig(dir, recipientsYaml([replacement.recipient, admin.publicLine]));
    const env = { RAMBOOT_IDENTITY: admin.file };
    expect((await cmd(['rekey'], { env })).out).toContain('nothing to do');
    expect((await cmd(['rekey', '--all'], { env })).code).toBe(0);
    expect(await ageDecrypt(await file('etc/app/token'), replacement.file)).toBe('token-value\n');
  });
});

describe('rotate: a new value of the same kind', () => {
  it('the host key changes and the printed fingerprint is ssh-keygen -lf of the new public key', async () => {
    const { cmd, file, keys, controller } = await healthyRepo();
    const old = await ageDecrypt(await file(HOST_KEY), controller.file);
    const r = await cmd(['rotate', HOST_KEY]);
    expect(r.code).toBe(0);
    const now = await ageDecrypt(await file(HOST_KEY), controller.file);
    expect(now).not.toBe(old);
    expect(now).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----/);
    const key = join(keys, 'rotated');
    await writeFile(key, now, { mode: 0o600 });
    await writeFile(`${key}.pub`, (await execa('ssh-keygen', ['-y', '-f', key])).stdout);
    const fp = await sshFingerprintOf(`${key}.pub`);
    expect(r.out).toContain(`host key fingerprint: ${fp}`);
    expect((await cmd(['hostkey'])).out.split('\n')[0]).toBe(fp);
  });

  it('a token stays a token of the same length, a password a password', async () => {
    const { cmd, file, controller } = await repo();
    await cmd(['add', 'a/token'], { stdin: 'deadbeef'.repeat(5) });
    await cmd(['add', 'a/pw'], { stdin: 'Sh0rt-but-fine!!xx\n' });
    await cmd(['rotate', 'a/token']);
    await cmd(['rotate', 'a/pw']);
    const token = await ageDecrypt(await file('a/token'), controller.file);
    expect(token).toMatch(/^[0-9a-f]{40}$/);
    expect(token).not.toBe('deadbeef'.repeat(5));
    expect(await ageDecrypt(await file('a/pw'), controller.file)).toMatch(/^[A-Za-z0-9]{18}\n$/);
  });

  it('refuses content it cannot regenerate (several lines), leaving it unchanged', async () => {
    const { cmd, file } = await repo();
    await cmd(['add', 'root/.ssh/authorized_keys'], { stdin: 'ssh-ed25519 AAAA a\nssh-ed25519 AAAA b\n' });
    const before = await file('root/.ssh/authorized_keys');
    const r = await cmd(['rotate', 'root/.ssh/authorized_keys']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/cannot rotate secrets\/root\/\.ssh\/authorized_keys\.age: it is not a single-line/);
    expect((await file('root/.ssh/authorized_keys')).equals(before)).toBe(true);
  });
});

describe('edit: plaintext only in a private RAM directory, removed whatever the editor does', () => {
  /**
   * Files containing one of `needles`, written since `stamp`, in /dev/shm, the temp
   * directory, the repository and $HOME: everywhere an editor or ramboot could leave a copy.
   */
  async function plaintextLeftBehind(stamp: string, needles: string[], dirs: string[]): Promise<string[]> {
    const { stdout } = await execa('sh', [
      '-c',
      'stamp=$1; ' +
        'find /dev/shm "$TMP" $DIRS -xdev -type f -newer "$stamp" 2>/dev/null | sort -u | while read -r f; do for n in $NEEDLES; do grep -qF -- "$n" "$f" 2>/dev/null && echo "$f"; done; done; true',
      'sh',
      stamp,
    ], { env: { TMP: tmpdir(), DIRS: dirs.join(' '), NEEDLES: needles.join(' ') } });
    return [...new Set(stdout.split('\n').filter(Boolean))];
  }

  async function editSetup() {
    const r = await repo();
    const marker = `plaintext-${randomBytes(8).toString('hex')}`;
    await r.cmd(['add', 'etc/app/conf'], { stdin: `${marker}\n` });
    // A HOME of its own, so that a copy an editor or ramboot kept there would be found.
    const home = await tempDir('ramboot-home-');
    const stamp = join(r.keys, 'stamp');
    await writeFile(stamp, '');
    const editor = async (name: string, body: string) => {
      const path = join(r.keys, name);
      await writeFile(path, `#!/bin/sh\n${body}\n`);
      await chmod(path, 0o755);
      return path;
    };
    const cmd = (argv: string[], opts: { stdin?: string; env?: Record<string, string> } = {}) => r.cmd(argv, { ...opts, env: { HOME: home, ...opts.env } });
    const leftBehind = (needles: string[]) => plaintextLeftBehind(stamp, needles, [r.dir, home]);
    return { ...r, cmd, home, marker, stamp, editor, leftBehind };
  }

  it('EDITOR=false: exit 1, secret unchanged, no plaintext anywhere', async () => {
    const { cmd, file, marker, leftBehind } = await editSetup();
    const before = await file('etc/app/conf');
    const r = await cmd(['edit', 'etc/app/conf'], { env: { EDITOR: 'false' } });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/the editor \(false\) exited with 1; secrets\/etc\/app\/conf\.age is unchanged/);
    expect((await file('etc/app/conf')).equals(before)).toBe(true);
    expect(await leftBehind([marker])).toEqual([]);
  });

  it('an editor that writes and then fails: secret unchanged, no plaintext anywhere', async () => {
    const { cmd, file, marker, leftBehind, editor } = await editSetup();
    const extra = `edited-${randomBytes(8).toString('hex')}`;
    const script = await editor('bad-editor', 'printf "%s\\n" "$EXTRA" >> "$1"\nexit 1');
    const before = await file('etc/app/conf');
    const r = await cmd(['edit', 'etc/app/conf'], { env: { EDITOR: script, EXTRA: extra } });
    expect(r.code).toBe(1);
    expect((await file('etc/app/conf')).equals(before)).toBe(true);
    expect(await leftBehind([marker, extra])).toEqual([]);
  });

  it('a working editor (with arguments) changes the secret; the file it saw was 0600 on tmpfs in a 0700 dir', async () => {
    const { cmd, file, controller, marker, leftBehind, editor, keys } = await editSetup();
    const log = join(keys, 'editor.log');
    const script = await editor(
      'good-editor',
      `[ "$1" = "--append" ] || exit 3\nshift\nstat -c %a "$1" >> "${log}"\nstat -c %a "$(dirname "$1")" >> "${log}"\nstat -f -c %T "$1" >> "${log}"\nprintf "%s\\n" "$EXTRA" >> "$1"`,
    );
    const extra = `added-${randomBytes(8).toString('hex')}`;
    const r = await cmd(['edit', 'etc/app/conf'], { env: { EDITOR: `${script} --append`, EXTRA: extra } });
    expect(r).toMatchObject({ code: 0, err: '' });
    expect(await ageDecrypt(await file('etc/app/conf'), controller.file)).toBe(`${marker}\n${extra}\n`);
    expect((await readFile(log, 'utf8')).split('\n')).toEqual(['600', '700', 'tmpfs', '']);
    expect(await leftBehind([marker, extra])).toEqual([]);
  });

  it('a ramboot SIGKILLed while its editor runs leaves plaintext in RAM, and the next secrets verb removes it', async () => {
    const { dir, env, home, marker, editor, leftBehind } = await editSetup();
    // A runtime directory of its own, on tmpfs like /run/user/UID.
    const xdg = await mkdtemp(join('/dev/shm', 'ramboot-test-xdg-'));
    try {
      // The editor finds the ramboot process among its ancestors and SIGKILLs it, as the
      // OOM killer would: ramboot gets no chance to clean up.
      const killer = await editor('killer', [
        'p=$PPID',
        'while [ "$p" -gt 1 ]; do',
        '  if tr "\\0" " " < /proc/$p/cmdline | grep -q "cli.js secrets edit"; then kill -KILL "$p"; exit 0; fi',
        '  p=$(sed "s/.*) //" /proc/$p/stat | cut -d" " -f2)',
        'done',
        'exit 1',
      ].join('\n'));
      const cli = (args: string[], runtimeDir: string, extra: Record<string, string> = {}) =>
        execa('node', [CLI, 'secrets', ...args, '--repo', dir], {
          reject: false,
          stdin: 'ignore',
          env: { ...process.env, ...env, HOME: home, VISUAL: '', XDG_RUNTIME_DIR: runtimeDir, ...extra },
        });
      // Once with a runtime directory, once without: the plaintext then goes to /dev/shm.
      for (const runtimeDir of [xdg, '']) {
        const killed = await cli(['edit', 'etc/app/conf'], runtimeDir, { EDITOR: killer });
        expect(killed.signal, String(killed.stderr)).toBe('SIGKILL');
      }
      expect(await leftBehind([marker]), 'what the killed runs left').toHaveLength(2);
      expect(await ramDirs(xdg)).toHaveLength(1);

      const list = await cli(['list'], xdg);
      expect(list.exitCode, String(list.stderr)).toBe(0);
      expect(String(list.stderr)).toMatch(/removed \/dev\/shm\/ramboot-secret-.*killed `ramboot secrets edit`/);
      expect(await ramDirs(xdg)).toEqual([]);
      expect(await ramDirs('/dev/shm')).toEqual([]);
      expect(await leftBehind([marker])).toEqual([]);
    } finally {
      await rm(xdg, { recursive: true, force: true });
    }
  });

  it('an editor that changes nothing leaves the file byte-identical', async () => {
    const { cmd, file } = await editSetup();
    const before = await file('etc/app/conf');
    const r = await cmd(['edit', 'etc/app/conf'], { env: { EDITOR: 'true' } });
    expect(r).toMatchObject({ code: 0, out: 'secrets/etc/app/conf.age unchanged\n' });
    expect((await file('etc/app/conf')).equals(before)).toBe(true);
  });

  it('editing a secret that does not exist points to add', async () => {
    const { cmd } = await editSetup();
    const r = await cmd(['edit', 'etc/nope'], { env: { EDITOR: 'true' } });
    expect(r.code).toBe(1);
    expect(r.err).toContain('ramboot secrets add etc/nope');
  });
});

describe('check: fails on anything that would break a build or leak a key', () => {
  const git = (dir: string, ...args: string[]) =>
    execa('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', '-c', 'init.defaultBranch=main', ...args], { cwd: dir });

  it('a healthy repository passes', async () => {
    const { cmd } = await healthyRepo();
    const r = await cmd(['check']);
    expect(r).toMatchObject({ code: 0, out: 'ok: 2 secrets decrypt and match ramboot.yaml; no plaintext private keys\n' });
  });

  it('a plaintext ssh key in root/ is named', async () => {
    const { dir, cmd, keys } = await healthyRepo();
    const leaked = await sshKeygen(keys, 'leaked');
    await writeRepoFile(dir, 'root/etc/ssh/id_ed25519', await readFile(leaked.file));
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('root/etc/ssh/id_ed25519: holds a plaintext private key (-----BEGIN OPENSSH PRIVATE KEY-----)');
  });

  it('an age identity in root/ is named, without printing it', async () => {
    const { dir, cmd, keys } = await healthyRepo();
    const leaked = await ageKeygen(keys, 'leaked.key');
    const content = await readFile(leaked.file, 'utf8');
    await writeRepoFile(dir, 'root/etc/age.key', content);
    const r = await cmd(['check']);
    expect(r.out).toContain('root/etc/age.key: holds a plaintext private key (AGE-SECRET-KEY-1)');
    expect(r.out).not.toContain(/AGE-SECRET-KEY-1\w+/.exec(content)![0]);
  });

  it('a key committed in HEAD is found even when gone from the working directory', async () => {
    const { dir, cmd, keys } = await healthyRepo();
    const leaked = await sshKeygen(keys, 'leaked');
    await writeRepoFile(dir, 'notes/old_key', await readFile(leaked.file));
    await git(dir, 'init', '-q');
    await git(dir, 'add', '-A');
    await git(dir, 'commit', '-q', '-m', 'oops');
    await rm(join(dir, 'notes'), { recursive: true });
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('HEAD:notes/old_key: holds a plaintext private key');
  });

  it('a mention of a key marker in documentation is not a key', async () => {
    const { dir, cmd } = await healthyRepo();
    await writeRepoFile(dir, 'root/usr/share/doc/README', 'Keys start with -----BEGIN OPENSSH PRIVATE KEY----- or AGE-SECRET-KEY-1…\n');
    expect((await cmd(['check'])).code).toBe(0);
  });

  it('a secret this identity cannot decrypt is named with its recipients', async () => {
    const { dir, cmd, keys } = await healthyRepo();
    const stranger = await ageKeygen(keys, 'stranger.key');
    await writeRepoFile(dir, 'secrets/etc/foreign.age', await ageEncrypt('f', ['-r', stranger.recipient]));
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^secrets\/etc\/foreign\.age: failed to decrypt secrets\/etc\/foreign\.age: it is encrypted to 1×X25519/m);
  });

  it('a truncated secret is named as damaged', async () => {
    const { dir, cmd, file } = await healthyRepo();
    const data = await file('etc/app/token');
    await writeFile(join(dir, 'secrets/etc/app/token.age'), data.subarray(0, data.length - 40));
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/secrets\/etc\/app\/token\.age: .*the file is damaged/);
  });

  it('stale recipients, a missing configured secret and a missing host key are each reported', async () => {
    const { dir, cmd, controller } = await repo();
    await cmd(['add', 'etc/app/token'], { stdin: 't' });
    await writeConfig(dir, `${recipientsYaml([controller.recipient])}  files:\n    etc/needed: {}\n`);
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/secrets\/etc\/app\/token\.age: is encrypted to .* but ramboot\.yaml lists 1×X25519; run `ramboot secrets rekey`/);
    expect(r.out).toContain('secrets/etc/needed.age: is missing; ramboot.yaml configures it (secrets.files.etc/needed)');
    expect(r.out).toContain(`secrets/${HOST_KEY}.age: is missing; it is the SSH host key the controller pins`);
    expect(r.out).toContain('3 problems');
  });

  it('plaintext a killed edit left that cannot be removed is a problem, named with how to remove it', async () => {
    const { cmd } = await healthyRepo();
    const exited = execa('true');
    await exited;
    const gone = exited.pid!;
    const left = await mkdtemp(`/dev/shm/ramboot-secret-pid${gone}-st1-`);
    // A mount inside it: rmdir fails with EBUSY, even for root.
    await mkdir(join(left, 'busy'));
    await execa('mount', ['-t', 'tmpfs', 'tmpfs', join(left, 'busy')]);
    try {
      const r = await cmd(['check']);
      expect(r.code).toBe(1);
      expect(r.out).toContain(`${left}: holds plaintext a killed \`ramboot secrets edit\` left, and removing it failed`);
      expect(r.out).toContain(`rm -rf ${left}`);
    } finally {
      await execa('umount', [join(left, 'busy')]);
      await rm(left, { recursive: true, force: true });
    }
  });

  it('a console password secret with several lines is named, with how to fix it', async () => {
    const { cmd } = await healthyRepo();
    await cmd(['add', 'etc/ramboot/passwords/root'], { stdin: 'first\nsecond\n' });
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('secrets/etc/ramboot/passwords/root.age: failed to read the password secrets/etc/ramboot/passwords/root.age: it has several lines');
    expect(r.out).not.toContain('first');
  });

  it('a file in secrets/ that is not .age is reported (it may be plaintext)', async () => {
    const { dir, cmd } = await healthyRepo();
    await writeRepoFile(dir, 'secrets/etc/password', 'hunter2');
    const r = await cmd(['check']);
    expect(r.code).toBe(1);
    expect(r.out).toContain('secrets/etc/password: refusing secret "secrets/etc/password": not an .age file');
  });
});

describe('hostkey: what the controller will pin', () => {
  it('prints the fingerprint and the public line of the host key secret', async () => {
    const { cmd, file, controller, keys } = await healthyRepo();
    const key = join(keys, 'host');
    await writeFile(key, await ageDecrypt(await file(HOST_KEY), controller.file), { mode: 0o600 });
    const pub = (await execa('ssh-keygen', ['-y', '-f', key])).stdout;
    await writeFile(`${key}.pub`, pub);
    const r = await cmd(['hostkey']);
    expect(r).toMatchObject({ code: 0, out: `${await sshFingerprintOf(`${key}.pub`)}\n${pub.split(' ').slice(0, 2).join(' ')}\n` });
  });

  it('without an identity, says how to provide one', async () => {
    const { cmd } = await healthyRepo();
    const r = await cmd(['hostkey'], { env: { RAMBOOT_IDENTITY: '' } });
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/--identity FILE, set RAMBOOT_IDENTITY/);
  });

  it('a group-readable identity is refused before anything is decrypted', async () => {
    const { cmd, controller } = await healthyRepo();
    await chmod(controller.file, 0o640);
    const r = await cmd(['hostkey']);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`chmod 600 ${controller.file}`);
  });
});

describe('generateInitialSecrets for ramboot init', () => {
  it('creates the host key, authorized_keys and root\'s console password secrets and returns the pin', async () => {
    const keys = await tempDir('ramboot-keys-');
    const user = await sshKeygen(keys, 'user');
    const controller = await ageKeygen(keys, 'controller.key');
    const dir = await makeRepo(recipientsYaml([controller.recipient, user.publicLine]));
    const pin = await generateInitialSecrets(dir, [controller.recipient, user.publicLine], user.publicLine);
    const hostKey = await readFile(join(dir, `secrets/${HOST_KEY}.age`));
    expect(await ageDecrypt(await readFile(join(dir, 'secrets/root/.ssh/authorized_keys.age')), user.file)).toBe(`${user.publicLine}\n`);
    expect(await ageDecrypt(await readFile(join(dir, 'secrets/etc/ramboot/passwords/root.age')), controller.file)).toMatch(/^[A-Za-z0-9]{24}\n$/);
    const key = join(keys, 'host');
    await writeFile(key, await ageDecrypt(hostKey, controller.file), { mode: 0o600 });
    await writeFile(`${key}.pub`, (await execa('ssh-keygen', ['-y', '-f', key])).stdout);
    expect(pin.fingerprint).toBe(await sshFingerprintOf(`${key}.pub`));
    const c = io(dir, { RAMBOOT_IDENTITY: controller.file });
    expect(await secretsCommand(['check'], c)).toBe(0);
    await expect(generateInitialSecrets(dir, [controller.recipient], user.publicLine)).rejects.toThrow(/already exists/);
  });
});

/** The ramboot-secret-* directories in a RAM directory. */
async function ramDirs(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('ramboot-secret-'));
}
