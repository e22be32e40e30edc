import { createHash } from 'node:crypto';
import type { Config } from '../lib/config-schema.js';
import { RambootError } from '../lib/errors.js';
import type { Source } from '../builder/source.js';
import { AgeDecryptError, readStanzas } from '../secrets/age.js';
import { parseRecipient, type Recipient, type StanzaSummary } from '../secrets/keys.js';
import { isIgnoredSecretsEntry, SECRETS_DIR } from '../secrets/paths.js';
import { configuredRecipients, describeRecipients, describeStanzas, recipientsMatch } from '../secrets/recipients.js';
import { safeImagePath, secretSpec } from '../secrets/store.js';

// The secrets of a commit as its files and its ramboot.yaml show them, without
// decrypting anything (a plan and `ramboot check` run in untrusted CI, without the
// controller's identity): which secrets exist, the hash of each ciphertext (a new one
// means re-encrypted: a new value, or the same one encrypted again), and the stanzas
// of each header, which say who can read it as far as age lets anyone tell.

export interface SecretFile {
  name: string;
  repoPath: string;
  sha256: string;
  stanzas?: StanzaSummary[];
  /** Why the file is not a usable secret (damaged, a symlink, an unsafe name). */
  problem?: string;
  configured: Recipient[];
}

export interface CommitSecrets {
  config: Config;
  files: Map<string, SecretFile>;
}

export interface SecretChange {
  /** The secret's path in the image ("etc/ssh/ssh_host_ed25519_key"); its value is never read. */
  name: string;
  change: 'added' | 'removed' | 'changed';
  details: string[];
}

export interface SecretsSection {
  changes: SecretChange[];
  /** secrets.recipients of ramboot.yaml, by label (public keys, abbreviated). */
  recipients: { added: string[]; removed: string[] };
}

/** Every secrets/ file of the commit, with what its header says. */
export async function readCommitSecrets(source: Source, config: Config, configFile: string): Promise<CommitSecrets> {
  const files = new Map<string, SecretFile>();
  for (const f of await source.list(SECRETS_DIR)) {
    if (isIgnoredSecretsEntry(f.path)) continue;
    const data = await f.read();
    const sha256 = createHash('sha256').update(data).digest('hex');
    let name: string;
    try {
      name = safeImagePath({ repoPath: f.path, data, isSymlink: f.kind === 'symlink' });
    } catch (err) {
      if (!(err instanceof RambootError)) throw err;
      files.set(f.path, { name: f.path, repoPath: f.path, sha256, problem: err.message, configured: [] });
      continue;
    }
    const configured = configuredRecipients(config, name, configFile);
    try {
      files.set(name, { name, repoPath: f.path, sha256, stanzas: await readStanzas(data), configured });
    } catch (err) {
      if (!(err instanceof AgeDecryptError)) throw err;
      files.set(name, { name, repoPath: f.path, sha256, problem: `${f.path} is ${err.message}`, configured });
    }
  }
  return { config, files };
}

/** Why the file's header does not show the recipients ramboot.yaml gives it, or undefined. */
export function staleness(f: SecretFile): string | undefined {
  if (!f.stanzas || recipientsMatch(f.stanzas, f.configured)) return undefined;
  return `is encrypted to ${describeStanzas(f.stanzas, f.configured)} but ramboot.yaml lists ${describeRecipients(f.configured)}; run \`ramboot secrets rekey\``;
}

function readers(f: SecretFile): string {
  return f.stanzas ? describeStanzas(f.stanzas, f.configured) : 'unknown recipients';
}

function specText(config: Config, name: string): Record<string, string> {
  const s = secretSpec(config, name);
  return { mode: s.mode.toString(8).padStart(4, '0'), owner: String(s.owner), group: String(s.group) };
}

function addedDetails(f: SecretFile, config: Config): string[] {
  if (f.problem) return [f.problem];
  const spec = specText(config, f.name);
  const stale = staleness(f);
  return [`encrypted to ${readers(f)}`, `mode ${spec.mode}, owner ${spec.owner}, group ${spec.group}`, ...(stale ? [`stale: it ${stale}`] : [])];
}

function changedDetails(a: SecretFile, b: SecretFile, ca: Config, cb: Config): string[] {
  const out: string[] = [];
  if (b.problem && b.problem !== a.problem) out.push(b.problem);
  if (a.sha256 !== b.sha256) out.push('re-encrypted (a new value, or the same one encrypted again: a plan does not decrypt to tell)');
  if (readers(a) !== readers(b)) out.push(`encrypted to ${readers(a)} → ${readers(b)}`);
  const [sa, sb] = [specText(ca, a.name), specText(cb, b.name)];
  for (const k of ['mode', 'owner', 'group'] as const) if (sa[k] !== sb[k]) out.push(`${k} ${sa[k]} → ${sb[k]}`);
  const stale = staleness(b);
  if (stale && (out.length > 0 || stale !== staleness(a))) out.push(`stale: it ${stale}`);
  return out;
}

function recipientLabels(config: Config): Map<string, string> {
  return new Map(config.secrets.recipients.map((text) => {
    const r = parseRecipient(text);
    return [r.id, r.label];
  }));
}

/** What changed in the secrets between two commits, by name only. */
export function compareSecrets(before: CommitSecrets, after: CommitSecrets): SecretsSection {
  const changes: SecretChange[] = [];
  for (const name of [...new Set([...before.files.keys(), ...after.files.keys()])].sort()) {
    const a = before.files.get(name);
    const b = after.files.get(name);
    if (!a) changes.push({ name, change: 'added', details: addedDetails(b!, after.config) });
    else if (!b) changes.push({ name, change: 'removed', details: [] });
    else {
      const details = changedDetails(a, b, before.config, after.config);
      if (details.length > 0) changes.push({ name, change: 'changed', details });
    }
  }
  const [la, lb] = [recipientLabels(before.config), recipientLabels(after.config)];
  return {
    changes,
    recipients: {
      added: [...lb].filter(([id]) => !la.has(id)).map(([, label]) => label),
      removed: [...la].filter(([id]) => !lb.has(id)).map(([, label]) => label),
    },
  };
}
