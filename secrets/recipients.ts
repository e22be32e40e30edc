import { Encrypter, type Recipient as AgeRecipient } from 'age-encryption';
import type { Config } from '../lib/config-schema.js';
import { ConfigError } from '../lib/errors.js';
import { SshEd25519Recipient } from './ssh-ed25519.js';
import { parseSshPublicLine, sshTag } from './ssh-public.js';

// Recipients as configured in ramboot.yaml, and how they compare with what a file's
// header shows.
//
// A secret is encrypted to the global `secrets.recipients` PLUS its own
// `secrets.files.<path>.recipients`: a per-secret list adds readers (say, a service's
// deploy key) without having to repeat the admins, and can never lock the admins out.
//
// An age header does not name X25519 recipients (the stanza holds only an ephemeral
// share), and no sidecar file records them. So "are the recipients current?" compares
// what is visible: the number of X25519 stanzas with the number of configured age1
// keys, and the ssh-ed25519 tags with the tags of the configured ssh keys. Swapping one
// age1 key for another therefore looks current; `rekey --all` re-encrypts regardless.

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

/**
 * Global recipients plus the secret's own, without duplicates, in configuration order.
 * `file` names the configuration in errors (parseConfig already rejects bad keys; this
 * guards configurations built in code).
 */
export function configuredRecipients(config: Config, imagePath: string, file: string): Recipient[] {
  const sources: { key: string; text: string }[] = [
    ...config.secrets.recipients.map((text, i) => ({ key: `secrets.recipients.${i}`, text })),
    ...(config.secrets.files[imagePath]?.recipients ?? []).map((text, i) => ({
      key: `secrets.files.${imagePath}.recipients.${i}`,
      text,
    })),
  ];
  const byId = new Map<string, Recipient>();
  for (const { key, text } of sources) {
    let r: Recipient;
    try {
      r = parseRecipient(text);
    } catch (err) {
      throw new ConfigError(file, undefined, key, (err as Error).message);
    }
    if (!byId.has(r.id)) byId.set(r.id, r);
  }
  return [...byId.values()];
}

// rage adds random "<x>-grease" stanzas to keep parsers honest; they name no recipient.
function counted(stanzas: StanzaSummary[]): StanzaSummary[] {
  return stanzas.filter((s) => !s.type.endsWith('-grease'));
}

function stanzaKeyOf(s: StanzaSummary): string {
  return s.tag !== undefined ? `${s.type} ${s.tag}` : s.type;
}

/** True when the header shows exactly the configured recipients, as far as it can tell. */
export function recipientsMatch(stanzas: StanzaSummary[], recipients: Recipient[]): boolean {
  const have = counted(stanzas).map(stanzaKeyOf).sort();
  const want = recipients.map((r) => stanzaKeyOf(r.stanza)).sort();
  return have.length === want.length && have.every((k, i) => k === want[i]);
}

/** "2×X25519, ssh-ed25519 alice@laptop, ssh-ed25519 [unknown tag AbCdEf]" */
export function describeStanzas(stanzas: StanzaSummary[], recipients: Recipient[]): string {
  const parts: string[] = [];
  const x25519 = counted(stanzas).filter((s) => s.type === 'X25519').length;
  if (x25519 > 0) parts.push(`${x25519}×X25519`);
  for (const s of counted(stanzas)) {
    if (s.type === 'X25519') continue;
    const known = recipients.find((r) => stanzaKeyOf(r.stanza) === stanzaKeyOf(s));
    parts.push(known ? known.label : s.tag !== undefined ? `${s.type} [unknown tag ${s.tag}]` : s.type);
  }
  return parts.join(', ') || 'no recipients';
}

/** "2×X25519, ssh-ed25519 alice@laptop" for the configured side of a comparison. */
export function describeRecipients(recipients: Recipient[]): string {
  return describeStanzas(recipients.map((r) => r.stanza), recipients);
}
