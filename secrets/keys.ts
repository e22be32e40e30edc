import { Encrypter, type Recipient as AgeRecipient } from 'age-encryption';
import { SshEd25519Recipient } from './ssh-ed25519.js';
import { parseSshPublicLine, sshTag } from './ssh-public.js';

// The recipient keys ramboot.yaml may list: age X25519 (age1…) and ssh-ed25519. This
// module depends on key formats only, so the config schema (lib/) can check every key
// in full without a cycle through the rest of secrets/.

export type RecipientType = 'X25519' | 'ssh-ed25519';

export interface Recipient {
  /** As written in ramboot.yaml; safe to show (public key). */
  text: string;
  type: RecipientType;
  /** What this recipient leaves in a header. */
  stanza: StanzaSummary;
  /** The key itself, without comment or spacing, to drop duplicates. */
  id: string;
  /** A short name for listings: the ssh comment, or the key abbreviated. */
  label: string;
  ageRecipient: string | AgeRecipient;
}

/** What a header stanza shows about its recipient. */
export interface StanzaSummary {
  type: string;
  /** The ssh-ed25519 key tag (first 4 bytes of SHA-256 of the wire key, base64). */
  tag?: string;
}

const X25519_RECIPIENT = /^age1[0-9a-z]{58}$/;

/** Parses an age1… or ssh-ed25519 recipient; throws an Error saying what is wrong. */
export function parseRecipient(text: string): Recipient {
  const trimmed = text.trim();
  if (trimmed.startsWith('age1')) {
    if (!X25519_RECIPIENT.test(trimmed) || !ageAccepts(trimmed)) {
      throw new Error(`"${trimmed}" is not a valid age X25519 public key (bad length or checksum)`);
    }
    return { text: trimmed, type: 'X25519', stanza: { type: 'X25519' }, id: trimmed, label: abbreviate(trimmed), ageRecipient: trimmed };
  }
  if (trimmed.startsWith('ssh-')) {
    let key;
    try {
      key = parseSshPublicLine(trimmed);
    } catch (err) {
      throw new Error(`"${abbreviate(trimmed)}" is not a usable ssh-ed25519 public key: ${(err as Error).message}`);
    }
    const id = `ssh-ed25519 ${key.wire.toString('base64')}`;
    return {
      text: trimmed,
      type: 'ssh-ed25519',
      stanza: { type: 'ssh-ed25519', tag: sshTag(key.wire) },
      id,
      label: key.comment ? `ssh-ed25519 ${key.comment}` : abbreviate(id),
      ageRecipient: new SshEd25519Recipient(key.key),
    };
  }
  throw new Error(`"${abbreviate(trimmed)}" is neither an age X25519 key (age1…) nor an ssh-ed25519 key`);
}

export function isRecipient(text: string): boolean {
  try {
    parseRecipient(text);
    return true;
  } catch {
    return false;
  }
}

function ageAccepts(text: string): boolean {
  try {
    new Encrypter().addRecipient(text);
    return true;
  } catch {
    return false;
  }
}

function abbreviate(text: string): string {
  return text.length > 24 ? `${text.slice(0, 16)}…${text.slice(-6)}` : text;
}
