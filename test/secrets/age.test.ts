import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { AgeDecryptError, decrypt, decryptWithHeader, encrypt, readStanzas } from '../../secrets/age.js';
import { readIdentityFile } from '../../secrets/identity.js';
import { parseSshPublicLine, sshTag } from '../../secrets/ssh-public.js';
import { ageDecrypt, ageEncrypt, ageKeygen, sshKeygen, tempDir } from './helpers.js';

const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

describe('files ramboot encrypts open with the age CLI', () => {
  for (const armor of [false, true]) {
    const form = armor ? 'armored' : 'binary';

    it(`X25519 recipient (${form})`, async () => {
      const dir = await tempDir();
      const key = await ageKeygen(dir);
      const ct = await encrypt(Buffer.from('x25519 secret\n'), [key.recipient], { armor });
      expect(text(ct).startsWith('-----BEGIN AGE ENCRYPTED FILE-----')).toBe(armor);
      expect(await ageDecrypt(ct, key.file)).toBe('x25519 secret\n');
    });

    it(`ssh-ed25519 recipient (${form})`, async () => {
      const dir = await tempDir();
      const key = await sshKeygen(dir);
      const ct = await encrypt(Buffer.from('ssh secret\n'), [key.publicLine], { armor });
      expect(await ageDecrypt(ct, key.file)).toBe('ssh secret\n');
    });
  }

  it('several recipients of both kinds each decrypt the same file', async () => {
    const dir = await tempDir();
    const a = await ageKeygen(dir, 'a.key');
    const b = await sshKeygen(dir, 'b');
    const c = await sshKeygen(dir, 'c');
    const ct = await encrypt(Buffer.from('shared'), [a.recipient, b.publicLine, c.publicLine]);
    for (const f of [a.file, b.file, c.file]) expect(await ageDecrypt(ct, f)).toBe('shared');
  });
});

describe('ramboot decrypts what the age CLI encrypts', () => {
  for (const armor of [false, true]) {
    const form = armor ? 'armored' : 'binary';

    it(`X25519 identity file (${form})`, async () => {
      const dir = await tempDir();
      const key = await ageKeygen(dir);
      const ct = await ageEncrypt('from age\n', [...(armor ? ['-a'] : []), '-r', key.recipient]);
      expect(text(await decrypt(ct, await readIdentityFile(key.file)))).toBe('from age\n');
    });

    it(`ssh-ed25519 private key (${form}, age -R key.pub)`, async () => {
      const dir = await tempDir();
      const key = await sshKeygen(dir);
      const ct = await ageEncrypt('from age ssh\n', [...(armor ? ['-a'] : []), '-R', `${key.file}.pub`]);
      expect(text(await decrypt(ct, await readIdentityFile(key.file)))).toBe('from age ssh\n');
    });
  }

  it('a large payload spanning many STREAM chunks survives the round trip', async () => {
    const dir = await tempDir();
    const key = await sshKeygen(dir);
    const big = Buffer.alloc(200_000, 'x');
    const ct = await ageEncrypt(big, ['-R', `${key.file}.pub`]);
    expect(Buffer.from(await decrypt(ct, await readIdentityFile(key.file))).equals(big)).toBe(true);
  });
});

describe('the header tells who a file is for, as far as age shows it', () => {
  it('lists X25519 stanzas and ssh-ed25519 tags matching the public keys', async () => {
    const dir = await tempDir();
    const a = await ageKeygen(dir);
    const b = await sshKeygen(dir);
    const ct = await ageEncrypt('x', ['-r', a.recipient, '-R', `${b.file}.pub`]);
    const tag = sshTag(parseSshPublicLine(b.publicLine).wire);
    expect(await readStanzas(ct)).toEqual([{ type: 'X25519' }, { type: 'ssh-ed25519', tag }]);
    const { stanzas } = await decryptWithHeader(ct, await readIdentityFile(b.file));
    expect(stanzas).toEqual([{ type: 'X25519' }, { type: 'ssh-ed25519', tag }]);
  });
});

describe('a file that does not decrypt says why', () => {
  it('wrong identity: no-identity, with the stanzas it is encrypted to', async () => {
    const dir = await tempDir();
    const owner = await sshKeygen(dir, 'owner');
    const stranger = await ageKeygen(dir);
    const ct = await encrypt(Buffer.from('x'), [owner.publicLine]);
    const err = await decrypt(ct, await readIdentityFile(stranger.file)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgeDecryptError);
    expect((err as AgeDecryptError).kind).toBe('no-identity');
    expect((err as AgeDecryptError).stanzas).toEqual([{ type: 'ssh-ed25519', tag: sshTag(parseSshPublicLine(owner.publicLine).wire) }]);
  });

  it('an ssh identity with the right tag but another key is not mistaken for the owner', async () => {
    // Same tag, different key: the stanza must be rejected by its MAC, not crash.
    const dir = await tempDir();
    const owner = await sshKeygen(dir, 'owner');
    const other = await sshKeygen(dir, 'other');
    const ct = await encrypt(Buffer.from('x'), [owner.publicLine]);
    const ownerTag = sshTag(parseSshPublicLine(owner.publicLine).wire);
    const otherTag = sshTag(parseSshPublicLine(other.publicLine).wire);
    const forged = Buffer.from(text(ct).replace(ownerTag, otherTag), 'latin1');
    // The substitution happened: the header now names the other key's tag.
    expect(forged.equals(Buffer.from(ct))).toBe(false);
    expect(await readStanzas(forged)).toEqual([{ type: 'ssh-ed25519', tag: otherTag }]);
    const err = await decrypt(forged, await readIdentityFile(other.file)).catch((e: unknown) => e);
    expect((err as AgeDecryptError).kind).toBe('no-identity');
  });

  it('truncated payload: malformed', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const ct = await encrypt(Buffer.alloc(1000, 'y'), [key.recipient]);
    const err = await decrypt(ct.subarray(0, ct.length - 20), await readIdentityFile(key.file)).catch((e: unknown) => e);
    expect((err as AgeDecryptError).kind).toBe('malformed');
  });

  it('truncated header: malformed', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const ct = await encrypt(Buffer.from('x'), [key.recipient]);
    const err = await decrypt(ct.subarray(0, 40), await readIdentityFile(key.file)).catch((e: unknown) => e);
    expect((err as AgeDecryptError).kind).toBe('malformed');
  });

  it('a flipped payload byte: malformed', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const ct = Buffer.from(await encrypt(Buffer.from('payload'), [key.recipient]));
    ct[ct.length - 5] ^= 0x01;
    const err = await decrypt(ct, await readIdentityFile(key.file)).catch((e: unknown) => e);
    expect((err as AgeDecryptError).kind).toBe('malformed');
  });

  it('damaged armor: malformed', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const armored = text(await encrypt(Buffer.from('x'), [key.recipient], { armor: true }));
    const damaged = Buffer.from(armored.replace(/\n[A-Za-z0-9+/]{10}/, '\n!!!!!!!!!!'));
    const err = await decrypt(damaged, await readIdentityFile(key.file)).catch((e: unknown) => e);
    expect((err as AgeDecryptError).kind).toBe('malformed');
  });

  it('not an age file at all: malformed', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const err = await decrypt(await readFile(key.file), await readIdentityFile(key.file)).catch((e: unknown) => e);
    expect((err as AgeDecryptError).kind).toBe('malformed');
  });
});

describe('encrypting refuses what cannot work', () => {
  it('no recipients', async () => {
    await expect(encrypt(Buffer.from('x'), [])).rejects.toThrow(/no recipients/);
  });

  it('a recipient with a bad checksum is named', async () => {
    const dir = await tempDir();
    const key = await ageKeygen(dir);
    const bad = key.recipient.slice(0, -1) + (key.recipient.endsWith('q') ? 'p' : 'q');
    await expect(encrypt(Buffer.from('x'), [bad])).rejects.toThrow(bad);
  });
});
