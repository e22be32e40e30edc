import { ConfigError, RambootError } from '../lib/errors.js';
import type { Config } from '../lib/config-schema.js';
import { parseRecipient } from './keys.js';

// Secrets sealed to the machine's TPM (secrets.at_rest: tpm). `ramboot secrets enroll`
// has the machine make an age identity and seal it to its TPM (image/agent/ramboot-sealed);
// the repository records the identity's public recipient and the sealed object in tpm/,
// a commit the user reviews. A build then encrypts the secrets archive to that recipient
// and to the repository's own recipients (whoever holds the repository's identity can
// still open a medium's secrets offline), and the medium holds only ciphertext.

export const TPM_DIR = 'tpm';
export const TPM_RECIPIENT = `${TPM_DIR}/recipient`;
export const TPM_KEY_PUB = `${TPM_DIR}/sealed-key.pub`;
export const TPM_KEY_PRIV = `${TPM_DIR}/sealed-key.priv`;

/** Where the image keeps what the boot needs to unseal (image/agent/ramboot-sealed). */
export const SEALED_IMAGE_DIR = 'etc/ramboot/sealed';

export interface Enrollment {
  /** The sealed identity's age recipient, "age1…". */
  recipient: string;
  /** The TPM2B_PUBLIC and TPM2B_PRIVATE of the sealed object, as tpm2_create writes them. */
  pub: Buffer;
  priv: Buffer;
}

/** The enrollment a commit records, or undefined when it records none. */
export async function readEnrollment(read: (path: string) => Promise<Buffer | undefined>): Promise<Enrollment | undefined> {
  const [text, pub, priv] = await Promise.all([read(TPM_RECIPIENT), read(TPM_KEY_PUB), read(TPM_KEY_PRIV)]);
  if (!text && !pub && !priv) return undefined;
  if (!text || !pub || !priv) {
    const missing = [[TPM_RECIPIENT, text], [TPM_KEY_PUB, pub], [TPM_KEY_PRIV, priv]].filter(([, v]) => !v).map(([p]) => p);
    throw new ConfigError(TPM_RECIPIENT, undefined, undefined, `the TPM enrollment is incomplete: ${missing.join(', ')} missing; enroll the machine again with \`ramboot secrets enroll\``);
  }
  return { recipient: recipientOf(text.toString()), pub, priv };
}

/** The one "age1…" line of tpm/recipient; its comments say which machine, and when. */
export function recipientOf(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  if (lines.length !== 1) throw new ConfigError(TPM_RECIPIENT, undefined, undefined, `must hold one age recipient (age1…), found ${lines.length} lines`);
  const recipient = lines[0]!;
  try {
    if (parseRecipient(recipient).type !== 'X25519') throw new Error('not an age1 recipient');
  } catch (err) {
    throw new ConfigError(TPM_RECIPIENT, text.split('\n').findIndex((l) => l.trim() === recipient) + 1, undefined, `${(err as Error).message}; enroll the machine again with \`ramboot secrets enroll\``);
  }
  return recipient;
}

export function renderRecipient(recipient: string, host: string, date: string): string {
  return [
    `# The age recipient of the key sealed to ${host}'s TPM (secrets.at_rest: tpm), made by`,
    `# \`ramboot secrets enroll\` on ${date}. Builds encrypt the secrets to it and to secrets.recipients.`,
    recipient,
    '',
  ].join('\n');
}

/** The machine's answer to `ramboot-sealed seal`: "recipient age1…", "pub BASE64", "priv BASE64". */
export function parseSealOutput(stdout: string, host: string): Enrollment {
  const fields = new Map(stdout.split('\n').map((l) => l.trim().split(/\s+/, 2) as [string, string | undefined]));
  const recipient = fields.get('recipient');
  const pub = fields.get('pub');
  const priv = fields.get('priv');
  if (!recipient || !pub || !priv) {
    throw new RambootError(`failed to enroll ${host}: the machine's answer lacks ${['recipient', 'pub', 'priv'].filter((k) => !fields.get(k)).join(', ')}`, {
      step: 'enroll',
      host,
      output: stdout,
    });
  }
  return { recipient: recipientOf(recipient), pub: Buffer.from(pub, 'base64'), priv: Buffer.from(priv, 'base64') };
}

/**
 * authorized_keys holds public keys: it stays readable on the medium, so that a machine
 * whose TPM cannot unseal still lets its owner in over SSH (a recovery boot).
 */
export function isPublicSecret(path: string): boolean {
  return path === 'authorized_keys' || path.endsWith('/authorized_keys');
}

/** Whom the sealed archive is encrypted to: the machine, and the repository's own recipients. */
export function sealedRecipients(enrollment: Enrollment, config: Config): string[] {
  return [enrollment.recipient, ...config.secrets.recipients.filter((r) => r !== enrollment.recipient)];
}
