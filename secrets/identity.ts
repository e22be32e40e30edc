import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { identityToRecipient } from 'age-encryption';
import type { Config } from '../lib/config-schema.js';
import { UsageError } from '../lib/errors.js';
import type { Identity } from './age.js';
import { SshEd25519Identity } from './ssh-ed25519.js';
import { looksLikeOpenSshPrivateKey, parseSshPrivateKey } from './ssh-private.js';
import { publicLine } from './ssh-public.js';

// The controller's identity: an age identity file (as age-keygen writes it) or an
// unencrypted OpenSSH ed25519 private key. Found, in order, at the path given on the
// command line, at $RAMBOOT_IDENTITY, or at secrets.identity in ramboot.yaml (relative
// to the repository). Like ssh, it refuses a key file others can read.

export interface IdentityLocation {
  /** From the command line; relative to the working directory. */
  path?: string;
  env: Record<string, string | undefined>;
  config?: Config;
  repoDir: string;
}

/** Where the identity is, or undefined when nothing names one. */
export function identityPath(loc: IdentityLocation): string | undefined {
  const home = loc.env.HOME ?? homedir();
  if (loc.path) return resolve(expandHome(loc.path, home));
  if (loc.env.RAMBOOT_IDENTITY) return resolve(expandHome(loc.env.RAMBOOT_IDENTITY, home));
  const configured = loc.config?.secrets.identity;
  if (!configured) return undefined;
  const expanded = expandHome(configured, home);
  return isAbsolute(expanded) ? expanded : resolve(loc.repoDir, expanded);
}

function expandHome(path: string, home: string): string {
  return path === '~' || path.startsWith('~/') ? home + path.slice(1) : path;
}

export async function loadIdentities(loc: IdentityLocation): Promise<Identity[]> {
  const path = identityPath(loc);
  if (!path) {
    throw new UsageError(
      'failed to load the controller identity: none configured; pass --identity FILE, set RAMBOOT_IDENTITY, ' +
        'or set secrets.identity in ramboot.yaml',
      { step: 'load identity' },
    );
  }
  return readIdentityFile(path);
}

export async function readIdentityFile(path: string): Promise<Identity[]> {
  let mode: number;
  try {
    mode = (await stat(path)).mode & 0o777;
  } catch (err) {
    throw new UsageError(`failed to load identity ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`, { step: 'load identity', input: path }, { cause: err });
  }
  if ((mode & 0o077) !== 0) {
    throw new UsageError(
      `refusing identity ${path}: its mode is ${mode.toString(8).padStart(4, '0')}, so group or others can read it; ` +
        `fix it with \`chmod 600 ${path}\``,
      { step: 'load identity', input: path },
    );
  }
  return parseIdentityFile(await readFile(path, 'utf8'), path);
}

/** Parses an identity file's text; `source` names it in messages. Never echoes key material. */
async function parseIdentityFile(text: string, source: string): Promise<Identity[]> {
  if (looksLikeOpenSshPrivateKey(text)) return [sshIdentity(text, source)];
  const identities: Identity[] = [];
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${source} line ${i + 1}`;
    if (!line.startsWith('AGE-SECRET-KEY-1')) {
      const hint = line.startsWith('ssh-') || line.startsWith('age1') ? ' (it looks like a public key; use the private key file)' : '';
      throw identityError(source, `${where} is neither a comment nor an AGE-SECRET-KEY-1… key${hint}`);
    }
    let recipient: string;
    try {
      recipient = await identityToRecipient(line);
    } catch {
      throw identityError(source, `${where} is not a valid age secret key (bad length or checksum)`);
    }
    identities.push({ type: 'X25519', recipient, source, addTo: (d) => d.addIdentity(line) });
  }
  if (identities.length === 0) throw identityError(source, 'the file holds no AGE-SECRET-KEY-1… key');
  return identities;
}

function sshIdentity(text: string, source: string): Identity {
  const parsed = parseSshPrivateKey(text);
  if (!parsed.ok) {
    const problem = {
      encrypted:
        'the ssh key is protected by a passphrase, which ramboot cannot ask for; use an age identity ' +
        '(age-keygen -o FILE) or an unencrypted copy of the key (cp KEY COPY && ssh-keygen -p -N "" -f COPY)',
      'not-ed25519': `only ssh-ed25519 keys can be age identities (this is ${parsed.detail})`,
      malformed: `not a readable OpenSSH private key (${parsed.detail})`,
    }[parsed.reason];
    throw identityError(source, problem);
  }
  const { seed, publicKey, comment } = parsed.key;
  const identity = new SshEd25519Identity(seed, publicKey);
  return { type: 'ssh-ed25519', recipient: publicLine(publicKey, comment), source, addTo: (d) => d.addIdentity(identity) };
}

function identityError(source: string, problem: string): UsageError {
  return new UsageError(`failed to load identity ${source}: ${problem}`, { step: 'load identity', input: source });
}
