import { createHash } from 'node:crypto';
import { SSH_ED25519, parseSshPublicLine } from '../lib/recipient.js';

// OpenSSH ed25519 public keys: the one-line form users paste ("ssh-ed25519 AAAA… comment"),
// the SSH wire encoding inside it, and the two digests derived from the wire form:
// age's 4-byte stanza tag and OpenSSH's SHA256 fingerprint. Parsing the line lives in
// lib/recipient.ts, where the config schema checks keys too.

export { SSH_ED25519, parseSshPublicLine, type SshEd25519Public } from '../lib/recipient.js';

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
