import { createHash } from 'node:crypto';
import { UsageError } from '../lib/errors.js';
import { repoPathOf } from './paths.js';

// Console passwords. A secret under etc/ramboot/passwords/ is the password of the user
// its file name names, in plaintext, so `ramboot secrets edit` shows it to whoever may
// read it. The image never holds the password: the build puts its SHA-512 crypt hash
// ($6$, which musl, glibc and busybox all check) at the same path in the secrets
// segment, and a boot service hands it to `chpasswd -e`. Nothing goes into the overlay.

export const PASSWORDS_DIR = 'etc/ramboot/passwords';

/** The user a password secret is for, or undefined when the path is no password secret. */
export function passwordUser(imagePath: string): string | undefined {
  const prefix = `${PASSWORDS_DIR}/`;
  if (!imagePath.startsWith(prefix)) return undefined;
  const user = imagePath.slice(prefix.length);
  return user.includes('/') ? undefined : user;
}

/** The password a secret holds: its one line, without the newline. Throws naming the secret. */
export function passwordOf(imagePath: string, plaintext: Uint8Array): Buffer {
  const text = Buffer.from(plaintext).toString('utf8');
  const lines = text.replace(/\r?\n$/, '').split(/\r?\n/);
  const problem = text.trim() === '' ? 'it is empty' : lines.length > 1 ? 'it has several lines; a password secret holds one line, the password' : undefined;
  if (problem) {
    throw new UsageError(`failed to read the password ${repoPathOf(imagePath)}: ${problem}; change it with \`ramboot secrets edit ${imagePath}\``, {
      step: 'read password',
      input: repoPathOf(imagePath),
    });
  }
  return Buffer.from(lines[0]!, 'utf8');
}

/**
 * The line /etc/shadow takes for a password secret. The salt comes from the secret's
 * ciphertext: a new value or a rekey gives a new salt, and the same commit gives the
 * same bytes (builds are reproducible). It reveals nothing: the ciphertext is public.
 */
export function passwordHash(imagePath: string, plaintext: Uint8Array, ciphertext: Uint8Array): string {
  const digest = createHash('sha256').update('ramboot password salt\0').update(imagePath).update('\0').update(ciphertext).digest();
  const salt = [...digest.subarray(0, 16)].map((b) => CRYPT_ALPHABET[b & 63]).join('');
  return sha512Crypt(passwordOf(imagePath, plaintext), salt);
}

const CRYPT_ALPHABET = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** The default of glibc, musl and `openssl passwd -6`; written without "rounds=". */
const ROUNDS = 5000;

/** SHA-512 crypt as Ulrich Drepper specified it ("Unix crypt using SHA-256 and SHA-512", 2008). */
export function sha512Crypt(password: Buffer, salt: string): string {
  const key = password;
  const s = Buffer.from(salt.slice(0, 16), 'utf8');
  const b = sha512(key, s, key);
  const a = createHash('sha512').update(key).update(s);
  for (let n = key.length; n > 0; n -= 64) a.update(b.subarray(0, Math.min(n, 64)));
  for (let n = key.length; n > 0; n >>= 1) a.update(n & 1 ? b : key);
  const alt = a.digest();
  const p = repeatTo(sha512(...Array<Buffer>(key.length).fill(key)), key.length);
  const sBytes = repeatTo(sha512(...Array<Buffer>(16 + alt[0]!).fill(s)), s.length);
  let c = alt;
  for (let i = 0; i < ROUNDS; i++) {
    const h = createHash('sha512').update(i & 1 ? p : c);
    if (i % 3) h.update(sBytes);
    if (i % 7) h.update(p);
    c = h.update(i & 1 ? c : p).digest();
  }
  return `$6$${s.toString('utf8')}$${encode(c)}`;
}

function sha512(...parts: Buffer[]): Buffer {
  const h = createHash('sha512');
  for (const part of parts) h.update(part);
  return h.digest();
}

function repeatTo(block: Buffer, length: number): Buffer {
  return Buffer.concat(Array<Buffer>(Math.ceil(length / block.length)).fill(block)).subarray(0, length);
}

/** The byte order of the specification's final base-64 step, three bytes to four characters. */
const ORDER = [
  [0, 21, 42], [22, 43, 1], [44, 2, 23], [3, 24, 45], [25, 46, 4], [47, 5, 26], [6, 27, 48],
  [28, 49, 7], [50, 8, 29], [9, 30, 51], [31, 52, 10], [53, 11, 32], [12, 33, 54], [34, 55, 13],
  [56, 14, 35], [15, 36, 57], [37, 58, 16], [59, 17, 38], [18, 39, 60], [40, 61, 19], [62, 20, 41],
] as const;

function encode(c: Buffer): string {
  let out = '';
  const put = (w: number, n: number) => {
    for (let i = 0; i < n; i++, w >>= 6) out += CRYPT_ALPHABET[w & 63];
  };
  for (const [x, y, z] of ORDER) put((c[x]! << 16) | (c[y]! << 8) | c[z]!, 4);
  put(c[63]!, 2);
  return out;
}
