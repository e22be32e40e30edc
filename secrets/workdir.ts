import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CONFIG_FILE, MACHINES_DIR, parseConfigLayers } from '../lib/config.js';
import type { Config } from '../lib/config-schema.js';
import { UsageError } from '../lib/errors.js';
import { UnsafeSecretPathError } from './errors.js';
import { repoPathOf, SECRETS_DIR } from './paths.js';
import type { EncryptedSecret } from './store.js';

// The secrets of a repository's working directory, for the CLI verbs. Only ciphertext
// passes through here; writes are atomic so a crash leaves the old or the new file.

/** The working tree's ramboot.yaml; with a machine, its machines/NAME/ramboot.yaml laid over it. */
export async function loadRepoConfig(repoDir: string, machine?: string): Promise<Config> {
  const files = [join(repoDir, CONFIG_FILE), ...(machine ? [join(repoDir, MACHINES_DIR, machine, CONFIG_FILE)] : [])];
  const layers = [];
  for (const file of files) {
    try {
      layers.push({ text: await readFile(file, 'utf8'), file });
    } catch (err) {
      const what = file === files[0] ? `is ${repoDir} a ramboot repository?` : `does ${repoDir} describe a machine "${machine}"?`;
      throw new UsageError(`failed to read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}; ${what}`, { step: 'read config', input: file }, { cause: err });
    }
  }
  // The shared secrets of a repository of several machines, whose ramboot.yaml may leave
  // host to each machine: they are managed with the repository's settings and no host.
  if (!machine && existsSync(join(repoDir, MACHINES_DIR))) layers.unshift({ text: 'host:\n  name: shared\n', file: `${MACHINES_DIR}/ (the machines share secrets/)` });
  return parseConfigLayers(layers);
}

/** Every file under secrets/ (symlinks flagged, not followed; fifos and the like skipped), sorted by path. */
export async function readSecretFiles(repoDir: string): Promise<EncryptedSecret[]> {
  const out: EncryptedSecret[] = [];
  async function walk(rel: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(join(repoDir, rel), { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel === SECRETS_DIR) return;
      throw err;
    }
    for (const e of entries) {
      const path = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(path);
      else if (e.isSymbolicLink()) out.push({ repoPath: path, data: new Uint8Array(0), isSymlink: true });
      else if (e.isFile()) out.push({ repoPath: path, data: await readFile(join(repoDir, path)) });
    }
  }
  await walk(SECRETS_DIR);
  return out.sort((a, b) => (a.repoPath < b.repoPath ? -1 : 1));
}

/** The secret's file, or undefined when it does not exist; a symlink is refused, never followed. */
export async function readSecretFile(repoDir: string, imagePath: string): Promise<EncryptedSecret | undefined> {
  const repoPath = repoPathOf(imagePath);
  const full = join(repoDir, repoPath);
  try {
    const st = await lstat(full);
    if (st.isSymbolicLink()) throw new UnsafeSecretPathError(repoPath, 'a symlink; a secret must be a regular file');
    return { repoPath, data: await readFile(full) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Writes secrets/<path>.age: temporary file, fsync, rename. */
export async function writeSecretFile(repoDir: string, imagePath: string, ciphertext: Uint8Array): Promise<string> {
  const repoPath = repoPathOf(imagePath);
  const final = join(repoDir, repoPath);
  await mkdir(dirname(final), { recursive: true });
  const tmp = join(dirname(final), `.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(ciphertext);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, final);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return repoPath;
}
