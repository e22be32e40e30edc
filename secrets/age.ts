import { Decrypter, Encrypter, armor, type Identity as AgeIdentity, type Stanza } from 'age-encryption';
import { UsageError } from '../lib/errors.js';
import { parseRecipient, type RecipientType, type StanzaSummary } from './keys.js';

// age encryption and decryption on age-encryption (X25519) plus our ssh-ed25519 stanza.
// Decryption also reports the header's stanzas, which is all a file says about who can
// read it; and it tells "no identity of ours fits" apart from "the file is damaged".

export interface Identity {
  readonly type: RecipientType;
  /** The public half: "age1…" or "ssh-ed25519 AAAA…"; for messages. */
  readonly recipient: string;
  /** Where it was loaded from; for messages. */
  readonly source: string;
  /** Gives the secret half to a Decrypter; nothing else can read it, so it cannot be logged. */
  addTo(decrypter: Decrypter): void;
}

export type DecryptFailure = 'no-identity' | 'malformed';

/** Why a file did not decrypt, with the header's stanzas when the header could be read. */
export class AgeDecryptError extends Error {
  constructor(
    readonly kind: DecryptFailure,
    message: string,
    readonly stanzas?: StanzaSummary[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AgeDecryptError';
  }
}

export interface Decrypted {
  plaintext: Uint8Array;
  /** The header's stanzas, authenticated by the header MAC. */
  stanzas: StanzaSummary[];
}

const ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----';

/** Encrypts to every recipient ("age1…" or "ssh-ed25519 AAAA…"). */
export async function encrypt(
  plaintext: Uint8Array,
  recipients: string[],
  opts: { armor?: boolean } = {},
): Promise<Uint8Array> {
  if (recipients.length === 0) {
    throw new UsageError('failed to encrypt: no recipients; list age or ssh-ed25519 keys under secrets.recipients in ramboot.yaml', {
      step: 'encrypt',
    });
  }
  const e = new Encrypter();
  for (const text of recipients) {
    try {
      e.addRecipient(parseRecipient(text).ageRecipient);
    } catch (err) {
      throw new UsageError(`failed to encrypt: ${(err as Error).message}`, { step: 'encrypt', input: text }, { cause: err });
    }
  }
  const binary = await e.encrypt(plaintext);
  return opts.armor ? new TextEncoder().encode(armor.encode(binary)) : binary;
}

export async function decrypt(ciphertext: Uint8Array, identities: Identity[]): Promise<Uint8Array> {
  return (await decryptWithHeader(ciphertext, identities)).plaintext;
}

/** Decrypts binary or ASCII-armored age; throws AgeDecryptError. */
export async function decryptWithHeader(ciphertext: Uint8Array, identities: Identity[]): Promise<Decrypted> {
  const binary = dearmor(ciphertext);
  // Decrypter asks identities in order and stops at the first that returns a key: the
  // first records the stanzas, the last is asked only when none of ours fitted.
  let stanzas: StanzaSummary[] | undefined;
  let noneFitted = false;
  const d = new Decrypter();
  d.addIdentity(observer((s) => (stanzas = s.map(summarize))));
  for (const id of identities) id.addTo(d);
  d.addIdentity(observer(() => (noneFitted = true)));
  try {
    const plaintext = await d.decrypt(binary);
    return { plaintext, stanzas: stanzas ?? [] };
  } catch (err) {
    if (noneFitted) throw new AgeDecryptError('no-identity', 'no identity matches any of the file\'s recipients', stanzas, { cause: err });
    throw new AgeDecryptError('malformed', `not a valid age file: ${(err as Error).message}`, stanzas, { cause: err });
  }
}

/** The header's stanzas, without decrypting; throws AgeDecryptError('malformed'). */
export async function readStanzas(ciphertext: Uint8Array): Promise<StanzaSummary[]> {
  const binary = dearmor(ciphertext);
  const d = new Decrypter();
  const stop = new Error('header read');
  let stanzas: StanzaSummary[] | undefined;
  d.addIdentity(
    observer((s) => {
      stanzas = s.map(summarize);
      throw stop;
    }),
  );
  try {
    await d.decrypt(binary);
  } catch (err) {
    if (err !== stop) throw new AgeDecryptError('malformed', `not a valid age file: ${(err as Error).message}`, undefined, { cause: err });
  }
  return stanzas ?? [];
}

function observer(see: (stanzas: Stanza[]) => void): AgeIdentity {
  return {
    unwrapFileKey(stanzas) {
      see(stanzas);
      return null;
    },
  };
}

function summarize(s: Stanza): StanzaSummary {
  const type = s.args[0] ?? '';
  return type.startsWith('ssh-') && s.args[1] !== undefined ? { type, tag: s.args[1] } : { type };
}

/** ASCII armor is recognised by its first line (after whitespace), as the age CLI does. */
function dearmor(data: Uint8Array): Uint8Array {
  const head = Buffer.from(data.subarray(0, 100)).toString('latin1').trimStart();
  if (!head.startsWith(ARMOR_BEGIN)) return data;
  try {
    return armor.decode(Buffer.from(data).toString('utf8'));
  } catch (err) {
    throw new AgeDecryptError('malformed', `not a valid age file: damaged ASCII armor: ${(err as Error).message}`, undefined, { cause: err });
  }
}
