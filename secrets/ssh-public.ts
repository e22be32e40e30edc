import { createHash } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';

// OpenSSH ed25519 public keys: the one-line form users paste ("ssh-ed25519 AAAA… comment"),
// the SSH wire encoding inside it, and the two digests derived from the wire form:
// age's 4-byte stanza tag and OpenSSH's SHA256 fingerprint.

export const SSH_ED25519 = 'ssh-ed25519';

export interface SshEd25519Public {
  /** SSH wire encoding: string "ssh-ed25519", string key (32 bytes). */
  wire: Buffer;
  /** The raw 32-byte ed25519 public key. */
  key: Uint8Array;
  comment: string;
}

/** Parses "ssh-ed25519 AAAA… [comment]"; throws an Error saying what is wrong. */
export function parseSshPublicLine(line: string): SshEd25519Public {
  const [type, blob, ...comment] = line.trim().split(/\s+/);
  if (type !== SSH_ED25519 || !blob) throw new Error('not an ssh-ed25519 public key ("ssh-ed25519 AAAA…")');
  const wire = Buffer.from(blob, 'base64');
  if (wire.toString('base64') !== blob) throw new Error('the key is not valid base64');
  return { wire, key: keyFromWire(wire), comment: comment.join(' ') };
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

export function wireFromKey(key: Uint8Array): Buffer {
  const type = Buffer.from(SSH_ED25519, 'latin1');
  const out = Buffer.alloc(4 + type.length + 4 + key.length);
  out.writeUInt32BE(type.length, 0);
  type.copy(out, 4);
  out.writeUInt32BE(key.length, 4 + type.length);
  Buffer.from(key).copy(out, 8 + type.length);
  return out;
}

/** "ssh-ed25519 AAAA…" (with the comment when given), as in authorized_keys. */
export function publicLine(key: Uint8Array, comment = ''): string {
  return `${SSH_ED25519} ${wireFromKey(key).toString('base64')}${comment ? ` ${comment}` : ''}`;
}

/** The tag age writes in ssh-ed25519 stanzas: first 4 bytes of SHA-256 of the wire key. */
export function sshTag(wire: Uint8Array): string {
  return base64NoPad(createHash('sha256').update(wire).digest().subarray(0, 4));
}

/** "SHA256:…" exactly as `ssh-keygen -lf` prints it for the public line. */
export function fingerprint(line: string): string {
  const { wire } = parseSshPublicLine(line);
  return `SHA256:${base64NoPad(createHash('sha256').update(wire).digest())}`;
}

export function base64NoPad(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '');
}

/** Decodes unpadded base64 as age requires it: canonical, so re-encoding gives the same text. */
export function decodeBase64NoPad(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]*$/.test(text)) return undefined;
  const bytes = Buffer.from(text, 'base64');
  return base64NoPad(bytes) === text ? new Uint8Array(bytes) : undefined;
}
