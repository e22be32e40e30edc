import { ed25519 } from '@noble/curves/ed25519.js';
import { Encrypter } from 'age-encryption';

// The recipient key formats ramboot.yaml may list: age X25519 (age1…) and ssh-ed25519
// public keys, checked in full (bech32 checksum, ssh wire format, curve point). Formats
// only: the config schema checks keys here, and secrets/ builds recipients on top.

export const SSH_ED25519 = 'ssh-ed25519';

export interface SshEd25519Public {
  /** SSH wire encoding: string "ssh-ed25519", string key (32 bytes). */
  wire: Buffer;
  /** The raw 32-byte ed25519 public key. */
  key: Uint8Array;
  comment: string;
}

/** A recipient whose format was checked; an ssh-ed25519 one with its parsed key. */
export type CheckedRecipient = { type: 'X25519'; text: string } | { type: 'ssh-ed25519'; text: string; ssh: SshEd25519Public };

const X25519_RECIPIENT = /^age1[0-9a-z]{58}$/;

/** Checks an age1… or ssh-ed25519 recipient; throws an Error saying what is wrong. */
export function checkRecipient(text: string): CheckedRecipient {
  const trimmed = text.trim();
  if (trimmed.startsWith('age1')) {
    if (!X25519_RECIPIENT.test(trimmed) || !ageAccepts(trimmed)) {
      throw new Error(`"${trimmed}" is not a valid age X25519 public key (bad length or checksum)`);
    }
    return { type: 'X25519', text: trimmed };
  }
  if (trimmed.startsWith('ssh-')) {
    try {
      return { type: 'ssh-ed25519', text: trimmed, ssh: parseSshPublicLine(trimmed) };
    } catch (err) {
      throw new Error(`"${abbreviate(trimmed)}" is not a usable ssh-ed25519 public key: ${(err as Error).message}`);
    }
  }
  throw new Error(`"${abbreviate(trimmed)}" is neither an age X25519 key (age1…) nor an ssh-ed25519 key`);
}

export function isRecipient(text: string): boolean {
  try {
    checkRecipient(text);
    return true;
  } catch {
    return false;
  }
}

/** Parses "ssh-ed25519 AAAA… [comment]"; throws an Error saying what is wrong. */
export function parseSshPublicLine(line: string): SshEd25519Public {
  const [type, blob, ...comment] = line.trim().split(/\s+/);
  if (type !== SSH_ED25519 || !blob) throw new Error('not an ssh-ed25519 public key ("ssh-ed25519 AAAA…")');
  const wire = Buffer.from(blob, 'base64');
  if (wire.toString('base64') !== blob) throw new Error('the key is not valid base64');
  return { wire, key: keyFromWire(wire), comment: comment.join(' ') };
}

/** A key shortened for messages and listings. */
export function abbreviate(text: string): string {
  return text.length > 24 ? `${text.slice(0, 16)}…${text.slice(-6)}` : text;
}

/** The raw key inside an SSH wire public key, checked to be a point on the curve. */
function keyFromWire(wire: Uint8Array): Uint8Array {
  const buf = Buffer.from(wire);
  const typeLen = buf.length >= 4 ? buf.readUInt32BE(0) : -1;
  const type = buf.subarray(4, 4 + typeLen).toString('latin1');
  const keyAt = 4 + typeLen;
  const keyLen = buf.length >= keyAt + 4 ? buf.readUInt32BE(keyAt) : -1;
  if (type !== SSH_ED25519 || keyLen !== 32 || buf.length !== keyAt + 4 + 32) {
    throw new Error('the key is not an ssh-ed25519 wire key');
  }
  const key = new Uint8Array(buf.subarray(keyAt + 4));
  try {
    ed25519.utils.toMontgomery(key);
  } catch {
    throw new Error('the key is not a valid ed25519 point');
  }
  return key;
}

function ageAccepts(text: string): boolean {
  try {
    new Encrypter().addRecipient(text);
    return true;
  } catch {
    return false;
  }
}
