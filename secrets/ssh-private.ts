import { randomBytes } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { publicLine, SSH_ED25519, wireFromKey } from './ssh-public.js';

// OpenSSH ed25519 private key files ("openssh-key-v1", PROTOCOL.key in OpenSSH), read
// and written here rather than with ssh2: ssh2's generator drops a leading zero byte
// of the key (about one key in a hundred comes out unreadable), and an unencrypted
// ed25519 key file is a few length-prefixed strings.
//
//   "openssh-key-v1\0" string cipher, string kdf, string kdfoptions, uint32 count (1),
//   string public wire key, string private section:
//     uint32 check, uint32 check, string "ssh-ed25519", string public (32),
//     string seed || public (64), string comment, padding 1, 2, 3… to 8 bytes

const OPENSSH_PRIVATE_KEY_HEADER = '-----BEGIN OPENSSH PRIVATE KEY-----';
const FOOTER = '-----END OPENSSH PRIVATE KEY-----';
const MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');

export interface SshEd25519Private {
  /** The 32-byte ed25519 seed. */
  seed: Uint8Array;
  publicKey: Uint8Array;
  comment: string;
}

export type ParsedPrivateKey =
  | { ok: true; key: SshEd25519Private }
  | { ok: false; reason: 'encrypted' | 'not-ed25519' | 'malformed'; detail: string };

export function looksLikeOpenSshPrivateKey(text: string): boolean {
  return text.trimStart().startsWith(OPENSSH_PRIVATE_KEY_HEADER);
}

/** Parses an unencrypted OpenSSH ed25519 private key; says why when it cannot. */
export function parseSshPrivateKey(text: string | Uint8Array): ParsedPrivateKey {
  const pem = Buffer.from(text).toString('latin1');
  const m = new RegExp(`${OPENSSH_PRIVATE_KEY_HEADER}([A-Za-z0-9+/=\\s]*)${FOOTER}`).exec(pem);
  if (!m) return malformed('not an OpenSSH private key ("-----BEGIN OPENSSH PRIVATE KEY-----")');
  const data = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
  if (!data.subarray(0, MAGIC.length).equals(MAGIC)) return malformed('not an openssh-key-v1 file');
  try {
    return parseBody(new Reader(data.subarray(MAGIC.length)));
  } catch (err) {
    if (err instanceof RangeError) return malformed('the key file is truncated');
    throw err;
  }
}

function parseBody(r: Reader): ParsedPrivateKey {
  const cipher = r.text();
  r.string(); // kdf name
  r.string(); // kdf options
  if (cipher !== 'none') return { ok: false, reason: 'encrypted', detail: `the key is encrypted (${cipher})` };
  if (r.u32() !== 1) return malformed('the file holds more than one key');
  r.string(); // public key, repeated in the private section
  const p = new Reader(r.string());
  if (p.u32() !== p.u32()) return malformed('the check bytes differ');
  const type = p.text();
  if (type !== SSH_ED25519) return { ok: false, reason: 'not-ed25519', detail: `a ${type} key, not ssh-ed25519` };
  const publicKey = p.string();
  const secret = p.string();
  const comment = p.text();
  const seed = secret.subarray(0, 32);
  // The file stores the public key beside the seed; a mismatch means a damaged file.
  if (publicKey.length !== 32 || secret.length !== 64 || !Buffer.from(ed25519.getPublicKey(seed)).equals(publicKey)) {
    return malformed('the public key does not belong to the private key');
  }
  return { ok: true, key: { seed: new Uint8Array(seed), publicKey: new Uint8Array(publicKey), comment } };
}

function malformed(detail: string): ParsedPrivateKey {
  return { ok: false, reason: 'malformed', detail };
}

/** Length-prefixed fields of the SSH wire format; reading past the end throws RangeError. */
class Reader {
  #at = 0;
  constructor(private readonly buf: Buffer) {}

  u32(): number {
    const v = this.buf.readUInt32BE(this.#at);
    this.#at += 4;
    return v;
  }

  string(): Buffer {
    const len = this.u32();
    if (this.#at + len > this.buf.length) throw new RangeError('field runs past the end');
    const v = this.buf.subarray(this.#at, this.#at + len);
    this.#at += len;
    return v;
  }

  text(): string {
    return this.string().toString('utf8');
  }
}

function sshString(data: Uint8Array | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bytes.length);
  return Buffer.concat([len, bytes]);
}

/** The OpenSSH private key file for a seed, in the layout ssh-keygen writes (70-column base64). */
export function formatSshPrivateKey(seed: Uint8Array, comment: string): string {
  const publicKey = ed25519.getPublicKey(seed);
  const check = randomBytes(4);
  const fields = [check, check, sshString(SSH_ED25519), sshString(publicKey), sshString(Buffer.concat([seed, publicKey])), sshString(comment)];
  const unpadded = Buffer.concat(fields);
  const padding = Buffer.from(Array.from({ length: (8 - (unpadded.length % 8)) % 8 }, (_, i) => i + 1));
  const count = Buffer.alloc(4);
  count.writeUInt32BE(1);
  const body = Buffer.concat([
    MAGIC,
    sshString('none'),
    sshString('none'),
    sshString(''),
    count,
    sshString(wireFromKey(publicKey)),
    sshString(Buffer.concat([unpadded, padding])),
  ]);
  const lines = body.toString('base64').match(/.{1,70}/g)!;
  return `${OPENSSH_PRIVATE_KEY_HEADER}\n${lines.join('\n')}\n${FOOTER}\n`;
}

/** A new ed25519 key pair: the OpenSSH private key file and its public line. */
export function generateSshEd25519(comment: string): { privateKey: string; publicLine: string } {
  const seed = ed25519.utils.randomSecretKey();
  return { privateKey: formatSshPrivateKey(seed, comment), publicLine: publicLine(ed25519.getPublicKey(seed), comment) };
}
