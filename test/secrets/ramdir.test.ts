import { readFileSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sweepRamDirs, withRamDir, type Sweep } from '../../secrets/ramdir.js';

// The RAM directories `secrets edit` puts plaintext in carry their owner (pid and start
// time) in their name, so that what a killed run left is told apart from a running edit.

/** This process's start time, as /proc/self/stat says it (field 22). */
function myStartTime(): string {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
}

/** The pid of a process that has exited. */
async function gonePid(): Promise<number> {
  const child = execa('true');
  await child;
  return child.pid!;
}

describe('RAM directories for plaintext', () => {
  let runtime: string;
  const env = () => ({ XDG_RUNTIME_DIR: runtime });

  beforeEach(async () => {
    // On /dev/shm, so it is tmpfs like /run/user/UID.
    runtime = await mkdtemp('/dev/shm/ramboot-test-runtime-');
  });

  afterEach(async () => {
    await rm(runtime, { recursive: true, force: true });
  });

  /** The sweep also looks in /dev/shm itself: only this test's directory counts here. */
  const mine = (s: Sweep): Sweep => ({ removed: s.removed.filter((d) => d.startsWith(runtime)), failed: s.failed.filter((f) => f.dir.startsWith(runtime)) });

  async function leftover(name: string): Promise<string> {
    const dir = join(runtime, name);
    await mkdir(dir, { mode: 0o700 });
    await writeFile(join(dir, 'secret'), 'plaintext\n', { mode: 0o600 });
    return dir;
  }

  it('are made 0700 in the runtime directory, named after the process that owns them, and removed after use', async () => {
    let seen = '';
    await withRamDir(env(), async (dir) => {
      seen = dir;
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
    });
    expect(seen.startsWith(join(runtime, `ramboot-secret-pid${process.pid}-st${myStartTime()}-`))).toBe(true);
    expect(await readdir(runtime)).toEqual([]);
  });

  it('the sweep keeps the directory of a running edit and removes those of processes that are gone', async () => {
    const gone = await gonePid();
    const running = await leftover(`ramboot-secret-pid${process.pid}-st${myStartTime()}-live`);
    const dead = await leftover(`ramboot-secret-pid${gone}-st1-dead`);
    // The same pid, but another process: its start time differs.
    const reused = await leftover(`ramboot-secret-pid${process.pid}-st1-reused`);
    // From a ramboot that did not yet record its owner.
    const unnamed = await leftover('ramboot-secret-AbC123');
    const sweep = mine(await sweepRamDirs(env()));
    expect(sweep.removed.sort()).toEqual([dead, reused, unnamed].sort());
    expect(sweep.failed).toEqual([]);
    expect(await readdir(runtime)).toEqual([running.split('/').pop()]);
  });

  it('the sweep leaves other users\' directories and other names alone', async () => {
    const gone = await gonePid();
    const theirs = await leftover(`ramboot-secret-pid${gone}-st1-theirs`);
    await chown(theirs, 65534, 65534);
    await leftover('not-ramboot');
    expect(mine(await sweepRamDirs(env()))).toEqual({ removed: [], failed: [] });
    expect((await readdir(runtime)).sort()).toEqual(['not-ramboot', theirs.split('/').pop()].sort());
  });
});
