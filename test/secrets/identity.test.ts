import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../lib/config.js';
import { UsageError } from '../../lib/errors.js';
import { decrypt, encrypt } from '../../secrets/age.js';
import { identityPath, loadIdentities, readIdentityFile } from '../../secrets/identity.js';
import { ageKeygen, sshKeygen, tempDir } from './helpers.js';

describe('the controller identity loads from what users already have', () => {
  it('an age-keygen file: comments skipped, every key usable, public keys known', async () => {
    const dir = await tempDir();
    const a = await ageKeygen(dir, 'a.key');
    const b = await ageKeygen(dir, 'b.key');
    const both = join(dir, 'both.key');
    await writeFile(both, `${await readFile(a.file, 'utf8')}\n${await readFile(b.file, 'utf8')}`, { mode: 0o600 });
    const ids = await readIdentityFile(both);
    expect(ids.map((i) => i.recipient)).toEqual([a.recipient, b.recipient]);
    expect(ids.every((i) => i.type === 'X25519' && i.source === both)).toBe(true);
    const ct = await encrypt(Buffer.from('for b'), [b.recipient]);
    expect(Buffer.from(await decrypt(ct, ids)).toString()).toBe('for b');
  });

  it('an unencrypted OpenSSH ed25519 key, whose recipient is its public line', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir);
    const [id] = await readIdentityFile(key.file);
    expect(id!.type).toBe('ssh-ed25519');
    expect(id!.recipient).toBe(key.publicLine);
  });

  it('the identity object does not reveal the secret key when printed or serialised', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const [id] = await readIdentityFile(key.file);
    const secret = /AGE-SECRET-KEY-1\w+/.exec(await readFile(key.file, 'utf8'))![0];
    expect(JSON.stringify(id)).not.toContain(secret);
    const { inspect } = await import('node:util');
    expect(inspect(id, { depth: 10, showHidden: true })).not.toContain(secret);
  });
});

describe('identity files that must not be used are refused with the fix', () => {
  it('group-readable: names the path, the mode and chmod 600', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    await chmod(key.file, 0o640);
    const err = await readIdentityFile(key.file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toContain(key.file);
    expect((err as Error).message).toContain('0640');
    expect((err as Error).message).toContain(`chmod 600 ${key.file}`);
  });

  it('world-readable ssh key: refused too', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir);
    await chmod(key.file, 0o604);
    await expect(readIdentityFile(key.file)).rejects.toThrow(/0604.*chmod 600/);
  });

  it('a passphrase-protected ssh key: says so and how to get a usable one', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir, 'locked', 'correct horse');
    await expect(readIdentityFile(key.file)).rejects.toThrow(/passphrase.*age-keygen/);
  });

  it('a public key given by mistake: hints at the private key, without echoing file content', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir);
    await chmod(`${key.file}.pub`, 0o600);
    const err = (await readIdentityFile(`${key.file}.pub`).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/line 1 .*looks like a public key/);
    expect(err.message).not.toContain(key.publicLine.split(' ')[1]);
  });

  it('a damaged age key: names the line, never prints the key', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const text = await readFile(key.file, 'utf8');
    // Change the key's last character: the bech32 checksum no longer matches.
    const damaged = text.replace(/(AGE-SECRET-KEY-1\w+)(\w)/, (_, head: string, last: string) => head + (last === 'Q' ? 'P' : 'Q'));
    await writeFile(key.file, damaged);
    const err = (await readIdentityFile(key.file).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/line 3 is not a valid age secret key/);
    expect(err.message).not.toMatch(/AGE-SECRET-KEY-1\w/);
  });

  it('a missing file: names it', async () => {
    const dir = await tempDir();
    await expect(readIdentityFile(join(dir, 'nope'))).rejects.toThrow(/nope: ENOENT/);
  });
});

describe('where the identity is looked for', () => {
  const config = (identity?: string) =>
    parseConfig(`host:\n  name: nas\n${identity ? `secrets:\n  identity: ${identity}\n` : ''}`, 'ramboot.yaml');

  it('--identity wins over RAMBOOT_IDENTITY, which wins over ramboot.yaml', () => {
    const loc = { env: { RAMBOOT_IDENTITY: '/env/key' }, config: config('/cfg/key'), repoDir: '/repo' };
    expect(identityPath({ ...loc, path: '/opt/key' })).toBe('/opt/key');
    expect(identityPath(loc)).toBe('/env/key');
    expect(identityPath({ ...loc, env: {} })).toBe('/cfg/key');
  });

  it('secrets.identity is relative to the repository, and ~ is the home directory', () => {
    expect(identityPath({ env: {}, config: config('keys/controller.key'), repoDir: '/repo' })).toBe('/repo/keys/controller.key');
    expect(identityPath({ env: { HOME: '/home/me' }, config: config('~/.config/ramboot/key'), repoDir: '/repo' })).toBe(
      '/home/me/.config/ramboot/key',
    );
  });

  it('nothing configured: a UsageError listing the three ways to name one', async () => {
    await expect(loadIdentities({ env: {}, config: config(), repoDir: '/repo' })).rejects.toThrow(
      /--identity.*RAMBOOT_IDENTITY.*secrets\.identity/,
    );
  });
});
