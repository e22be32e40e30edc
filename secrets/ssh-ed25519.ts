import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { Stanza, type Identity as AgeIdentity, type Recipient as AgeRecipient } from 'age-encryption';
import { base64NoPad, decodeBase64NoPad, sshTag, wireFromKey } from './ssh-public.js';

// The age "ssh-ed25519" recipient type (age spec, as implemented by filippo.io/age/agessh),
// which age-encryption does not provide:
//
//   -> ssh-ed25519 <tag> <base64(ephemeral share)>
//   <base64(ChaCha20-Poly1305(wrap key, zero nonce, file key))>
//
//   tag        = first 4 bytes of SHA-256(SSH wire public key)
//   tweak      = HKDF-SHA-256(ikm = "", salt = wire key, info = LABEL)
//   shared     = X25519(tweak, X25519(ephemeral, Montgomery(ed25519 public key)))
//   wrap key   = HKDF-SHA-256(ikm = shared, salt = share || Montgomery(public key), info = LABEL)
//
// The recipient side of the decryption uses the Montgomery form of the ed25519 secret
// (the first half of SHA-512 of the seed), so one SSH key serves both ssh and age.

const LABEL = new TextEncoder().encode('age-encryption.org/v1/ssh-ed25519');
const TYPE = 'ssh-ed25519';

function tweakFor(wire: Uint8Array): Uint8Array {
  return hkdf(sha256, new Uint8Array(0), wire, LABEL, 32);
}

function wrapKey(shared: Uint8Array, share: Uint8Array, theirMontgomery: Uint8Array): Uint8Array {
  const salt = new Uint8Array(share.length + theirMontgomery.length);
  salt.set(share);
  salt.set(theirMontgomery, share.length);
  return hkdf(sha256, shared, salt, LABEL, 32);
}

// The wrap key is used for exactly one message, so the all-zero nonce of the spec is safe.
function seal(key: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const c = createCipheriv('chacha20-poly1305', key, Buffer.alloc(12), { authTagLength: 16 });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

function open(key: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  const d = createDecipheriv('chacha20-poly1305', key, Buffer.alloc(12), { authTagLength: 16 });
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  try {
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
  } catch {
    return null;
  }
}

export class SshEd25519Recipient implements AgeRecipient {
  readonly #wire: Buffer;
  readonly #montgomery: Uint8Array;

  constructor(publicKey: Uint8Array) {
    this.#wire = wireFromKey(publicKey);
    this.#montgomery = ed25519.utils.toMontgomery(publicKey);
  }

  wrapFileKey(fileKey: Uint8Array): Stanza[] {
    const ephemeral = randomBytes(32);
    const share = x25519.scalarMultBase(ephemeral);
    const shared = x25519.scalarMult(tweakFor(this.#wire), x25519.scalarMult(ephemeral, this.#montgomery));
    const body = seal(wrapKey(shared, share, this.#montgomery), fileKey);
    return [new Stanza([TYPE, sshTag(this.#wire), base64NoPad(share)], body)];
  }
}

export class SshEd25519Identity implements AgeIdentity {
  readonly #wire: Buffer;
  readonly #tag: string;
  readonly #secret: Uint8Array;
  readonly #montgomery: Uint8Array;

  /** seed: the 32-byte ed25519 private seed; publicKey: its 32-byte public key. */
  constructor(seed: Uint8Array, publicKey: Uint8Array) {
    this.#wire = wireFromKey(publicKey);
    this.#tag = sshTag(this.#wire);
    this.#secret = ed25519.utils.toMontgomerySecret(seed);
    this.#montgomery = ed25519.utils.toMontgomery(publicKey);
  }

  unwrapFileKey(stanzas: Stanza[]): Uint8Array | null {
    for (const s of stanzas) {
      if (s.args[0] !== TYPE) continue;
      if (s.args.length !== 3) throw new Error('invalid ssh-ed25519 stanza: expected a tag and a share');
      if (s.args[1] !== this.#tag) continue;
      const share = decodeBase64NoPad(s.args[2]!);
      if (share?.length !== 32 || s.body.length !== 32) throw new Error('invalid ssh-ed25519 stanza');
      const shared = x25519.scalarMult(tweakFor(this.#wire), x25519.scalarMult(this.#secret, share));
      const fileKey = open(wrapKey(shared, share, this.#montgomery), s.body);
      // A 4-byte tag can collide with another key's: keep looking, as age does for X25519.
      if (fileKey) return fileKey;
    }
    return null;
  }
}
