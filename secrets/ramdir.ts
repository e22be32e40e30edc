import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../lib/errors.js';

// A private directory in RAM for plaintext that must exist as a file for a moment (an
// editor needs a path). Only tmpfs/ramfs qualify: the plaintext never reaches a disk.
// The per-user runtime directory is preferred over the shared /dev/shm.

const RAM_FILESYSTEMS = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);

async function ramBase(env: Record<string, string | undefined>): Promise<string> {
  const candidates = [env.XDG_RUNTIME_DIR, '/dev/shm'].filter((c): c is string => Boolean(c));
  for (const dir of candidates) {
    try {
      if (RAM_FILESYSTEMS.has((await statfs(dir)).type)) return dir;
    } catch {
      // Missing or unreadable: try the next one.
    }
  }
  throw new UsageError(
    `failed to find a RAM-backed directory (tried ${candidates.join(', ')}); refusing to write plaintext to disk`,
    { step: 'create RAM directory' },
  );
}

/** Runs fn with a new 0700 directory in RAM, and removes it and everything in it afterwards. */
export async function withRamDir<T>(env: Record<string, string | undefined>, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(await ramBase(env), 'ramboot-secret-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
