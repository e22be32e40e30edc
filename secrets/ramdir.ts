import { readFileSync } from 'node:fs';
import { lstat, mkdtemp, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, UsageError } from '../lib/errors.js';

// A private directory in RAM for plaintext that must exist as a file for a moment (an
// editor needs a path). Only tmpfs/ramfs qualify: the plaintext never reaches a disk.
// The per-user runtime directory is preferred over the shared /dev/shm.
//
// A process that is SIGKILLed cannot remove its directory, so the name says who made
// it: "ramboot-secret-pid<pid>-st<start time>-<random>". The start time (from
// /proc/<pid>/stat) tells a live owner from a later process that got the same pid.
// Every `ramboot secrets` verb sweeps what owners that are gone left behind.

const RAM_FILESYSTEMS = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);
const PREFIX = 'ramboot-secret-';
const NAME = /^ramboot-secret-pid(\d+)-st(\d+)-/;

/** Where plaintext may go: the runtime directory first, then /dev/shm. */
function ramCandidates(env: Record<string, string | undefined>): string[] {
  return [...new Set([env.XDG_RUNTIME_DIR, '/dev/shm'].filter((c): c is string => Boolean(c)))];
}

async function ramBase(env: Record<string, string | undefined>): Promise<string> {
  const candidates = ramCandidates(env);
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

/** Field 22 of /proc/<pid>/stat (clock ticks after boot), read after the command name, which may hold spaces. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Runs fn with a new 0700 directory in RAM, and removes it and everything in it afterwards. */
export async function withRamDir<T>(env: Record<string, string | undefined>, fn: (dir: string) => Promise<T>): Promise<T> {
  const owner = `pid${process.pid}-st${startTime(process.pid) ?? 0}-`;
  const dir = await mkdtemp(join(await ramBase(env), `${PREFIX}${owner}`));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface Sweep {
  /** Directories of owners that are gone, removed with what they held. */
  removed: string[];
  /** Those that could not be removed, and why: plaintext is still there. */
  failed: { dir: string; reason: string }[];
}

/**
 * Removes the RAM directories of `ramboot secrets edit` runs that are gone, in every RAM
 * directory a run may have used. Only this user's directories are touched. A name
 * without an owner comes from a ramboot that did not record one: nothing else makes
 * such names, so it counts as gone.
 */
export async function sweepRamDirs(env: Record<string, string | undefined>): Promise<Sweep> {
  const sweep: Sweep = { removed: [], failed: [] };
  const uid = process.getuid?.();
  for (const base of ramCandidates(env)) {
    let names: string[];
    try {
      names = await readdir(base);
    } catch {
      continue;
    }
    for (const name of names.filter((n) => n.startsWith(PREFIX)).sort()) {
      const dir = join(base, name);
      const st = await lstat(dir).catch(() => undefined);
      if (!st?.isDirectory() || (uid !== undefined && st.uid !== uid) || ownerAlive(name)) continue;
      try {
        await rm(dir, { recursive: true, force: true });
        sweep.removed.push(dir);
      } catch (err) {
        sweep.failed.push({ dir, reason: describe(err) });
      }
    }
  }
  return sweep;
}

function ownerAlive(name: string): boolean {
  const m = NAME.exec(name);
  if (!m) return false;
  return startTime(Number(m[1])) === m[2];
}
