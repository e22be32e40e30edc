import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { passwordHash, passwordOf, passwordUser, sha512Crypt } from '../../secrets/passwords.js';

// Console passwords reach the machine only as SHA-512 crypt hashes, computed by ramboot;
// `openssl passwd -6` is the reference the hashes must match.

async function opensslCrypt(password: string, salt: string): Promise<string> {
  const { stdout } = await execa('openssl', ['passwd', '-6', '-salt', salt, '-stdin'], { input: password });
  return stdout.trim();
}

describe('SHA-512 crypt', () => {
  it.each([
    ['a short password', 'hunter2', 'saltsaltsaltsalt'],
    ['a 24-character generated one', 'Ab3dEf6hIj9kLm2nOp5qRs8t', 'Q9/zZ.0aB1cD2eF3'],
    ['exactly 64 bytes', 'x'.repeat(64), 'abc'],
    ['longer than 64 bytes', 'long '.repeat(30), '12345678'],
    ['UTF-8 beyond ASCII', 'pässwörd-ünïcode-🔑', 'GdU2c.8KqL0xYb1W'],
  ])('matches openssl passwd -6 for %s', async (_what, password, salt) => {
    expect(sha512Crypt(Buffer.from(password, 'utf8'), salt)).toBe(await opensslCrypt(password, salt));
  });
});

describe('password secrets', () => {
  const ciphertext = Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----\nexample\n');

  it('are the files directly under etc/ramboot/passwords/, one per user', () => {
    expect(passwordUser('etc/ramboot/passwords/root')).toBe('root');
    expect(passwordUser('etc/ramboot/passwords/sub/root')).toBeUndefined();
    expect(passwordUser('etc/ssh/ssh_host_ed25519_key')).toBeUndefined();
  });

  it('hash to the same $6$ line for the same ciphertext, and to another for another', async () => {
    const one = passwordHash('etc/ramboot/passwords/root', Buffer.from('s3cret\n'), ciphertext);
    expect(passwordHash('etc/ramboot/passwords/root', Buffer.from('s3cret\n'), ciphertext)).toBe(one);
    expect(one).toMatch(/^\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}$/);
    const salt = one.split('$')[2]!;
    expect(one).toBe(await opensslCrypt('s3cret', salt));
    expect(passwordHash('etc/ramboot/passwords/root', Buffer.from('s3cret\n'), Buffer.from('another ciphertext'))).not.toBe(one);
  });

  it('hold one line: an empty one or several lines are refused, naming the secret', () => {
    expect(() => passwordOf('etc/ramboot/passwords/root', Buffer.from('\n'))).toThrow(/secrets\/etc\/ramboot\/passwords\/root\.age: it is empty/);
    expect(() => passwordOf('etc/ramboot/passwords/root', Buffer.from('a\nb\n'))).toThrow(/it has several lines/);
    expect(passwordOf('etc/ramboot/passwords/root', Buffer.from('no newline')).toString()).toBe('no newline');
  });
});
