import { appendFileSync, chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { UsageError } from './errors.js';

// Files that hold secrets or the controller's state: readable by their owner only,
// whatever the umask of whoever started ramboot (a umask only takes bits away, so the
// mode given at creation is the most a file gets).

export const PRIVATE_FILE = 0o600;
export const PRIVATE_DIR = 0o700;

/**
 * A secret the user handed over as a file (a token, a webhook secret). One that others
 * can read is refused rather than used: the secret may already be out, and the person
 * should know.
 */
export function readPrivateFile(path: string, what: string): string {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch (err) {
    throw new UsageError(`failed to read ${what} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { step: 'read secret', input: path }, { cause: err });
  }
  if (mode & 0o077) {
    throw new UsageError(
      `failed to read ${what} ${path}: it is open to other users (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); make it private with \`chmod 600 ${path}\` (and replace the secret if others could read it)`,
      { step: 'read secret', input: path },
    );
  }
  return readFileSync(path, 'utf8');
}

/**
 * Writes a whole file 0600: a temporary file beside it, synced, then renamed over it, so
 * a crash leaves the old content or the new, never half, and never a moment of 0644.
 */
export function writePrivateFile(path: string, data: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  // A leftover of a killed writer keeps its old mode when reopened: start afresh.
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, 'wx', PRIVATE_FILE);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Appends to a file, creating it 0600. */
export function appendPrivateFile(path: string, data: string): void {
  appendFileSync(path, data, { mode: PRIVATE_FILE });
}

/** A directory and its missing parents, each created 0700; the directory itself is made 0700 if it was not. */
export function makePrivateDir(path: string): void {
  mkdirSync(path, { recursive: true, mode: PRIVATE_DIR });
  chmodSync(path, PRIVATE_DIR);
}
