import { randomBytes, randomInt } from 'node:crypto';
import { generateSshEd25519, parseSshPrivateKey } from './ssh-private.js';

// New secret values: ssh-ed25519 keys, random tokens and passwords; and, for rotate,
// which kind of value an existing secret holds so its replacement has the same shape.
// Tokens and passwords end with a newline like any text file; `$(cat file)` drops it.

export const KINDS = ['ssh-ed25519', 'password', 'token'] as const;
export type SecretKind = (typeof KINDS)[number];

export interface ValueShape {
  kind: SecretKind;
  /** Characters of a token or password (without the newline). */
  length?: number;
  /** The comment of an ssh key. */
  comment?: string;
  newline?: boolean;
}

const TOKEN_LENGTH = 64; // 32 random bytes in hex
const PASSWORD_LENGTH = 24; // ~143 bits from 62 symbols
const PASSWORD_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
// Shorter existing values are replaced by values of at least this strength.
const MIN_TOKEN = 32;
const MIN_PASSWORD = 16;

export function isKind(text: string): text is SecretKind {
  return (KINDS as readonly string[]).includes(text);
}

export function generateValue(shape: ValueShape): Buffer {
  const nl = shape.newline === false ? '' : '\n';
  switch (shape.kind) {
    case 'ssh-ed25519':
      return Buffer.from(generateSshEd25519(shape.comment ?? '').privateKey);
    case 'token': {
      const n = shape.length ?? TOKEN_LENGTH;
      return Buffer.from(randomBytes(Math.ceil(n / 2)).toString('hex').slice(0, n) + nl);
    }
    case 'password': {
      const n = shape.length ?? PASSWORD_LENGTH;
      let out = '';
      for (let i = 0; i < n; i++) out += PASSWORD_ALPHABET[randomInt(PASSWORD_ALPHABET.length)];
      return Buffer.from(out + nl);
    }
  }
}

/** The shape of an existing value, or why it cannot be regenerated automatically. */
export function shapeOf(plaintext: Uint8Array): ValueShape | { problem: string } {
  const text = Buffer.from(plaintext).toString('utf8');
  if (text.includes('-----BEGIN')) {
    const parsed = parseSshPrivateKey(plaintext);
    if (parsed.ok) return { kind: 'ssh-ed25519', comment: parsed.key.comment };
    return { problem: `it holds a key ramboot cannot generate (${parsed.detail})` };
  }
  const newline = text.endsWith('\n');
  const body = newline ? text.slice(0, -1) : text;
  if (!/^[\x21-\x7e]+$/.test(body)) {
    return { problem: 'it is not a single-line token or password (it has spaces, several lines or binary data)' };
  }
  if (/^[0-9a-f]+$/.test(body)) return { kind: 'token', length: Math.max(body.length, MIN_TOKEN), newline };
  return { kind: 'password', length: Math.max(body.length, MIN_PASSWORD), newline };
}
