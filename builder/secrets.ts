import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../lib/config-schema.js';
import { loadIdentities } from '../secrets/identity.js';
import { passwordHash, passwordUser } from '../secrets/passwords.js';
import { repoPathOf } from '../secrets/paths.js';
import { decryptForImage, hostKeyPublic, type ImageSecret as DecryptedSecret } from '../secrets/store.js';
import { Writable } from 'node:stream';
import { encrypt } from '../secrets/age.js';
import { isPublicSecret, SEALED_IMAGE_DIR, sealedRecipients, type Enrollment } from '../secrets/sealed.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import type { Source } from './source.js';
import type { Work } from './work.js';
import { resolveId } from './users.js';

// The secrets segment is made from memory: decrypted buffers go straight into the
// cpio stream, so plaintext never touches the build host's disks. Console passwords
// (secrets/etc/ramboot/passwords/USER.age) go in as their crypt hash, never as the
// password (secrets/passwords.ts).

export interface ImageSecret extends DecryptedSecret {
  /** For the host key secret: its public half, which deploy pins. */
  publicLine?: string;
}

export async function decryptSecrets(source: Source, config: Config, repoDir: string, identity: string | undefined, work: Pick<Work, 'emit'>): Promise<ImageSecret[]> {
  const files = (await source.list('secrets')).filter((f) => f.path.endsWith('.age'));
  if (files.length === 0 && Object.keys(config.secrets.files).length === 0) {
    work.emit({ kind: 'warn', source: 'build', message: `no secrets in this repository: deploy cannot pin the host key (add secrets/${config.secrets.host_key}.age)` });
    return [];
  }
  const encrypted = await Promise.all(files.map(async (f) => ({ repoPath: f.path, data: await f.read(), isSymlink: f.kind === 'symlink' })));
  const identities = await loadIdentities({ path: identity, env: process.env, config, repoDir });
  const ciphertexts = new Map(encrypted.map((f) => [f.repoPath, f.data]));
  const secrets: ImageSecret[] = (await decryptForImage(encrypted, config, identities)).map((s) => asInImage(s, ciphertexts.get(repoPathOf(s.path))!));
  const hostKey = hostKeyPublic(secrets, config);
  if (!hostKey) work.emit({ kind: 'warn', source: 'build', message: `no host key secret secrets/${config.secrets.host_key}.age: deploy cannot pin the host key` });
  return secrets.map((s) => (s.path === config.secrets.host_key && hostKey ? { ...s, publicLine: hostKey } : s));
}

/** A console password goes into the image as the line /etc/shadow takes, never as the password. */
function asInImage(secret: DecryptedSecret, ciphertext: Uint8Array): DecryptedSecret {
  if (passwordUser(secret.path) === undefined) return secret;
  return { ...secret, data: Buffer.from(`${passwordHash(secret.path, secret.data, ciphertext)}\n`) };
}

/** Archive entries for the secrets, owners resolved against the new root's passwd and group. */
export function secretEntries(secrets: ImageSecret[], upper: string, lower: string, time: number): CpioEntry[] {
  const etc = (f: string) => (existsSync(join(upper, 'etc', f)) ? upper : lower);
  for (const s of secrets) {
    const user = passwordUser(s.path);
    // A password for a user the image lacks would only fail at boot, in chpasswd.
    if (user !== undefined) resolveId(etc('passwd'), 'passwd', user, `the password secret ${repoPathOf(s.path)}`);
  }
  return secrets.map((s) => ({
    path: s.path,
    type: 'file' as const,
    mode: s.mode,
    uid: resolveId(etc('passwd'), 'passwd', s.owner, `secret ${s.path}`),
    gid: resolveId(etc('group'), 'group', s.group, `secret ${s.path}`),
    mtime: time,
    size: s.data.length,
    data: s.data,
  }));
}

/**
 * The secrets segment's entries when secrets.at_rest is tpm: public ones (authorized_keys)
 * as they are, the rest as one archive encrypted in memory to the machine's sealed key
 * and the repository's recipients, beside the sealed object the boot unseals it with
 * (image/agent/ramboot-sealed). age encrypts with a fresh file key each time, so this
 * segment's bytes differ from build to build; it is a few KiB.
 */
export async function sealedEntries(entries: CpioEntry[], enrollment: Enrollment, config: Config, time: number): Promise<CpioEntry[]> {
  const open = entries.filter((e) => isPublicSecret(e.path));
  const archive = await sealArchive(entries.filter((e) => !isPublicSecret(e.path)), sealedRecipients(enrollment, config));
  const file = (name: string, data: Buffer): CpioEntry => ({ path: `${SEALED_IMAGE_DIR}/${name}`, type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: time, size: data.length, data });
  return [...open, file('secrets.age', archive), file('key.pub', enrollment.pub), file('key.priv', enrollment.priv)];
}

async function sealArchive(entries: CpioEntry[], recipients: string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      done();
    },
  });
  await writeCpio(entries, sink);
  const plain = Buffer.concat(chunks);
  try {
    return Buffer.from(await encrypt(plain, recipients));
  } finally {
    plain.fill(0);
  }
}
