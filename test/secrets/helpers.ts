import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterEach } from 'vitest';
import type { SecretsIO } from '../../controller/cli/verbs/secrets.js';

// Keys come from the real tools (age-keygen, ssh-keygen) in per-test temporary
// directories, so every test also checks interoperability with them.

const made: string[] = [];

afterEach(async () => {
  await Promise.all(made.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

export async function tempDir(prefix = 'ramboot-secrets-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export interface AgeKey {
  file: string;
  recipient: string;
}

export async function ageKeygen(dir: string, name = 'age.key'): Promise<AgeKey> {
  const file = join(dir, name);
  await execa('age-keygen', ['-o', file]);
  const { stdout } = await execa('age-keygen', ['-y', file]);
  return { file, recipient: stdout.trim() };
}

export interface SshKey {
  file: string;
  publicLine: string;
}

export async function sshKeygen(dir: string, name = 'id_ed25519', passphrase = ''): Promise<SshKey> {
  const file = join(dir, name);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', `${name}@test`, '-f', file]);
  return { file, publicLine: (await readFile(`${file}.pub`, 'utf8')).trim() };
}

export async function ageEncrypt(plaintext: string | Buffer, args: string[]): Promise<Buffer> {
  // Binary output: a ciphertext may end in 0x0a, which execa would strip by default.
  const r = await execa('age', args, { input: plaintext, encoding: 'buffer', stripFinalNewline: false });
  return Buffer.from(r.stdout);
}

/** age -d; resolves to the plaintext, or rejects with age's error. */
export async function ageDecrypt(ciphertext: Uint8Array, identityFile: string): Promise<string> {
  const r = await execa('age', ['-d', '-i', identityFile], { input: Buffer.from(ciphertext), stripFinalNewline: false });
  return r.stdout;
}

/** A repository working directory with a ramboot.yaml; `secrets` is the YAML of the secrets key. */
export async function makeRepo(secretsYaml: string): Promise<string> {
  const dir = await tempDir('ramboot-repo-');
  await writeConfig(dir, secretsYaml);
  return dir;
}

export async function writeConfig(repoDir: string, secretsYaml: string): Promise<void> {
  await writeFile(join(repoDir, 'ramboot.yaml'), `host:\n  name: nas\nsecrets:\n${secretsYaml}`);
}

/** YAML for secrets.recipients. */
export function recipientsYaml(recipients: string[]): string {
  return `  recipients:\n${recipients.map((r) => `    - ${JSON.stringify(r)}\n`).join('')}`;
}

export async function writeRepoFile(repoDir: string, path: string, content: string | Uint8Array, mode?: number): Promise<void> {
  await mkdir(dirname(join(repoDir, path)), { recursive: true });
  await writeFile(join(repoDir, path), content, mode === undefined ? {} : { mode });
}

export interface CapturedIO extends SecretsIO {
  out: () => string;
  err: () => string;
}

export function io(repoDir: string, env: Record<string, string | undefined> = {}, stdin = ''): CapturedIO {
  let out = '';
  let err = '';
  return {
    repoDir,
    stdin: Readable.from([Buffer.from(stdin)]),
    stdout: { write: (t: string) => (out += t) },
    stderr: { write: (t: string) => (err += t) },
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    out: () => out,
    err: () => err,
  };
}

export async function sshFingerprintOf(publicKeyFile: string): Promise<string> {
  const { stdout } = await execa('ssh-keygen', ['-l', '-f', publicKeyFile]);
  return stdout.split(' ')[1]!;
}
