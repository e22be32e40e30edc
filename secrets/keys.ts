import type { Recipient as AgeRecipient } from 'age-encryption';
import { abbreviate, checkRecipient } from '../lib/recipient.js';
import { SshEd25519Recipient } from './ssh-ed25519.js';
import { sshTag } from './ssh-public.js';

// The recipient keys ramboot.yaml may list: age X25519 (age1…) and ssh-ed25519, as age
// recipients. Their formats are checked in lib/recipient.ts, which the config schema
// uses too.

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

/** Parses an age1… or ssh-ed25519 recipient; throws an Error saying what is wrong. */
export function parseRecipient(text: string): Recipient {
  const checked = checkRecipient(text);
  if (checked.type === 'X25519') {
    return { text: checked.text, type: 'X25519', stanza: { type: 'X25519' }, id: checked.text, label: abbreviate(checked.text), ageRecipient: checked.text };
  }
  const key = checked.ssh;
  const id = `ssh-ed25519 ${key.wire.toString('base64')}`;
  return {
    text: checked.text,
    type: 'ssh-ed25519',
    stanza: { type: 'ssh-ed25519', tag: sshTag(key.wire) },
    id,
    label: key.comment ? `ssh-ed25519 ${key.comment}` : abbreviate(id),
    ageRecipient: new SshEd25519Recipient(key.key),
  };
}
