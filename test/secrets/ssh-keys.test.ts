import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ed25519 } from '@noble/curves/ed25519.js';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { formatSshPrivateKey, generateSshEd25519, parseSshPrivateKey } from '../../secrets/ssh-private.js';
import { fingerprint, parseSshPublicLine, publicLine } from '../../secrets/ssh-public.js';
import { sshFingerprintOf, sshKeygen, tempDir } from './helpers.js';

/** A seed whose public key starts with the given byte: the edge a length-stripping encoder gets wrong. */
function seedWithPublicPrefix(byte: number): Uint8Array {
  for (;;) {
    const seed = new Uint8Array(randomBytes(32));
    if (ed25519.getPublicKey(seed)[0] === byte) return seed;
  }
}

async function sshKeygenReads(dir: string, privateKey: string): Promise<string> {
  const file = join(dir, `k${randomBytes(4).toString('hex')}`);
  await writeFile(file, privateKey, { mode: 0o600 });
  return (await execa('ssh-keygen', ['-y', '-f', file])).stdout.trim();
}

describe('generated ssh keys are ordinary OpenSSH keys', () => {
  it('ssh-keygen reads them and derives the same public line, including keys starting with a zero byte', async () => {
    const dir = await tempDir();
    for (const seed of [seedWithPublicPrefix(0), seedWithPublicPrefix(0), new Uint8Array(randomBytes(32))]) {
      const pem = formatSshPrivateKey(seed, 'root@nas');
      expect(await sshKeygenReads(dir, pem)).toBe(publicLine(ed25519.getPublicKey(seed), 'root@nas'));
    }
  });

  it('generateSshEd25519 round-trips through the parser for many keys', () => {
    for (let i = 0; i < 500; i++) {
      const { privateKey, publicLine: line } = generateSshEd25519('c');
      const parsed = parseSshPrivateKey(privateKey);
      expect(parsed.ok).toBe(true);
      if (parsed.ok) expect(publicLine(parsed.key.publicKey, 'c')).toBe(line);
    }
  });

  it('fingerprint() prints what ssh-keygen -lf prints', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir);
    expect(fingerprint(key.publicLine)).toBe(await sshFingerprintOf(`${key.file}.pub`));
  });
});

describe('reading private keys says why a key cannot be used', () => {
  it('an ssh-keygen ed25519 key parses, with its comment', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir, 'me');
    const parsed = parseSshPrivateKey(await readFile(key.file));
    expect(parsed.ok && publicLine(parsed.key.publicKey, parsed.key.comment)).toBe(key.publicLine);
  });

  it('a passphrase-protected key: encrypted', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir, 'locked', 'pass phrase');
    expect(parseSshPrivateKey(await readFile(key.file))).toMatchObject({ ok: false, reason: 'encrypted' });
  });

  it('an RSA key: not-ed25519, naming its type', async () => {
    const dir = await tempDir();
    await execa('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', join(dir, 'rsa')]);
    expect(parseSshPrivateKey(await readFile(join(dir, 'rsa')))).toMatchObject({ ok: false, reason: 'not-ed25519', detail: 'a ssh-rsa key, not ssh-ed25519' });
  });

  it('a truncated key and plain text: malformed', () => {
    const pem = generateSshEd25519('x').privateKey;
    const lines = pem.trimEnd().split('\n');
    const truncated = [...lines.slice(0, 3), lines.at(-1)].join('\n');
    expect(parseSshPrivateKey(truncated)).toMatchObject({ ok: false, reason: 'malformed' });
    expect(parseSshPrivateKey('hunter2')).toMatchObject({ ok: false, reason: 'malformed' });
  });

  it('public lines that are not ed25519 keys are rejected with a reason', () => {
    expect(() => parseSshPublicLine('ssh-rsa AAAAB3NzaC1yc2E')).toThrow(/not an ssh-ed25519 public key/);
    expect(() => parseSshPublicLine('ssh-ed25519 AAAA!')).toThrow(/base64/);
    expect(() => parseSshPublicLine('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5')).toThrow(/wire key/);
  });
});
