import type { Config } from '../lib/config-schema.js';
import { ConfigError } from '../lib/errors.js';
import { parseRecipient, type Recipient, type StanzaSummary } from './keys.js';

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
