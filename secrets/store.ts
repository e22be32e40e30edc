import { CONFIG_FILE } from '../lib/config.js';
import type { Config, SecretSpec } from '../lib/config-schema.js';
import { UsageError } from '../lib/errors.js';
import { AgeDecryptError, decryptWithHeader, type Decrypted, type Identity } from './age.js';
import { CorruptSecretError, MissingSecretError, UnsafeSecretPathError, WrongIdentityError } from './errors.js';
import { imagePathOf, isIgnoredSecretsEntry, repoPathOf } from './paths.js';
import { configuredRecipients } from './recipients.js';
import { parseSshPrivateKey } from './ssh-private.js';
import { publicLine } from './ssh-public.js';

export { fingerprint } from './ssh-public.js';

// The build-time view of secrets/: encrypted files in, decrypted image files out.
// Plaintext exists only in the returned buffers; nothing here writes or logs it.

export interface EncryptedSecret {
  /** Path in the repository: "secrets/etc/x.age". */
  repoPath: string;
  data: Uint8Array;
  /** The repository entry is a symlink (git mode 120000); refused, secrets are regular files. */
  isSymlink?: boolean;
}

export interface ImageSecret {
  /** Path in the image, relative to its root: "etc/x". */
  path: string;
  mode: number;
  owner: string | number;
  group: string | number;
  data: Buffer;
}

/** What a secret gets when ramboot.yaml does not list it. */
const DEFAULT_SPEC: Omit<SecretSpec, 'recipients'> = { mode: 0o600, owner: 0, group: 0 };

export function secretSpec(config: Config, imagePath: string): Omit<SecretSpec, 'recipients'> {
  const { mode, owner, group } = config.secrets.files[imagePath] ?? DEFAULT_SPEC;
  return { mode, owner, group };
}

/**
 * Decrypts every secret for the image, sorted by path. Refuses unsafe paths and symlinks,
 * secrets ramboot.yaml configures but the repository lacks, and files that do not decrypt.
 */
export async function decryptForImage(files: EncryptedSecret[], config: Config, identities: Identity[]): Promise<ImageSecret[]> {
  const byPath = indexSecrets(files);
  requireConfigured(byPath, config);
  const out: ImageSecret[] = [];
  for (const [path, file] of [...byPath].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const { plaintext } = await decryptSecret(file, path, config, identities);
    out.push({ path, ...secretSpec(config, path), data: Buffer.from(plaintext) });
  }
  return out;
}

/** Image path → file, after checking every path; placeholders such as .gitkeep are skipped. */
export function indexSecrets(files: EncryptedSecret[]): Map<string, EncryptedSecret> {
  const byPath = new Map<string, EncryptedSecret>();
  for (const file of files) {
    if (!isIgnoredSecretsEntry(file.repoPath)) byPath.set(safeImagePath(file), file);
  }
  return byPath;
}

/** The image path of a secret file; throws UnsafeSecretPathError for unsafe names and symlinks. */
export function safeImagePath(file: EncryptedSecret): string {
  const path = imagePathOf(file.repoPath);
  if (file.isSymlink) throw new UnsafeSecretPathError(file.repoPath, 'a symlink; a secret must be a regular file');
  return path;
}

function requireConfigured(byPath: Map<string, EncryptedSecret>, config: Config): void {
  for (const path of Object.keys(config.secrets.files).sort()) {
    if (!byPath.has(path)) throw new MissingSecretError(path, repoPathOf(path));
  }
}

/** Decrypts one secret; throws WrongIdentityError or CorruptSecretError naming the file. */
export async function decryptSecret(file: EncryptedSecret, imagePath: string, config: Config, identities: Identity[]): Promise<Decrypted> {
  try {
    return await decryptWithHeader(file.data, identities);
  } catch (err) {
    if (!(err instanceof AgeDecryptError)) throw err;
    if (err.kind === 'no-identity') {
      throw new WrongIdentityError(file.repoPath, err.stanzas ?? [], configuredRecipients(config, imagePath, CONFIG_FILE), identities);
    }
    throw new CorruptSecretError(file.repoPath, err.message, err);
  }
}

/** The OpenSSH public line of the host key secret, or undefined when there is none. */
export function hostKeyPublic(secrets: ImageSecret[], config: Config): string | undefined {
  const secret = secrets.find((s) => s.path === config.secrets.host_key);
  return secret && sshPublicLine(secret.path, secret.data, 'the SSH host key (secrets.host_key)');
}

/** "ssh-ed25519 AAAA…" of a secret holding an OpenSSH ed25519 private key; throws naming the secret. */
export function sshPublicLine(imagePath: string, plaintext: Uint8Array, role = 'the SSH key'): string {
  const parsed = parseSshPrivateKey(plaintext);
  if (!parsed.ok) {
    throw new UsageError(
      `failed to read ${role} ${repoPathOf(imagePath)}: it must be an unencrypted OpenSSH ed25519 private key (${parsed.detail})`,
      { step: 'read ssh key', input: repoPathOf(imagePath) },
    );
  }
  return publicLine(parsed.key.publicKey);
}
