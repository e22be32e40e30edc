import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { commitAll, localMirror, makeRepo, minimalAlpineFiles } from '../helpers/apk.js';
import { CLI, ramboot, SHARED_STATE, tempDir } from '../helpers/ramboot.js';

// The tests' local apk mirror lives in the shared test state: the operator allows it there.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

// A build interrupted in setup.sh, while its overlay is mounted (setup.sh's /proc and
// /dev are the sandbox's own, gone with it): Ctrl-C and SIGTERM stop the sandbox, undo
// every mount and remove the directory before ramboot exits; a SIGKILLed build cannot
// undo its mount, and the next build sweeps what it left. The repository carries a
// secret, and no plaintext of it is left behind either way.

const marker = `ramboot-plaintext-${randomBytes(12).toString('hex')}`;
let repo: string;
let state: string;
let env: Record<string, string>;

/** Mount points under dir, from this process's view of the mount table. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir));
}

const workDirs = () => {
  const tmp = join(state, 'cache', 'tmp');
  return existsSync(tmp) ? readdirSync(tmp) : [];
};

/** Starts a build and resolves once setup.sh runs (it writes a file into the build's root, then sleeps). */
async function buildUntilSetup() {
  const images = join(tempDir('interrupt-images'), 'images');
  // No forced kill after a delay (execa's default): the cleanup after a signal must be allowed to finish.
  const child = execa('node', [CLI, 'build', '--repo', repo, '--state', state, '--images', images], { reject: false, forceKillAfterDelay: false, env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const end = Date.now() + 5 * 60_000;
  while (!/build: \[6\/7\] running setup.sh/.test(stderr)) {
    if (child.exitCode !== null) throw new Error(`the build ended before setup.sh: ${stderr}`);
    if (Date.now() > end) throw new Error(`setup.sh did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // The overlay setup.sh runs on is mounted once it runs.
  while (mountsUnder(join(state, 'cache', 'tmp')).length < 1) await new Promise((r) => setTimeout(r, 100));
  return { child, images, stderr: () => stderr };
}

async function until(done: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; !done() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
}

/** setup.sh's `sleep 600`, if anything of a killed build's sandbox still runs. */
function sandboxedSleeps(): string[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .flatMap((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8') === ['sleep', '600', ''].join('\0') ? [p] : [];
      } catch {
        return [];
      }
    });
}

/** Every regular file under dir (one file system, no symlinks followed) whose bytes hold the marker. */
function plaintextUnder(dir: string): string[] {
  const hits: string[] = [];
  const dev = lstatSync(dir).dev;
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.dev !== dev) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && readFileSync(p).includes(marker)) hits.push(p);
    }
  };
  walk(dir);
  return hits;
}

beforeAll(async () => {
  const keys = tempDir('interrupt-keys');
  await execa('age-keygen', ['-o', join(keys, 'key.txt')]);
  const recipient = /public key: (age1\S+)/.exec(readFileSync(join(keys, 'key.txt'), 'utf8'))![1]!;
  env = { RAMBOOT_IDENTITY: join(keys, 'key.txt') };
  const files = minimalAlpineFiles(localMirror());
  files['ramboot.yaml'] = String(files['ramboot.yaml']).replace('recipients: []', `recipients: [${recipient}]`);
  files['setup.sh'] = ['#!/bin/sh\nset -e\necho "setup.sh runs"\nsleep 600\n', 0o755];
  repo = makeRepo(files);
  const plain = join(keys, 'token');
  writeFileSync(plain, `${marker}\n`);
  const add = await ramboot(['secrets', 'add', 'etc/app/token', '--from', plain, '--repo', repo], env);
  expect(add.exitCode, add.stderr).toBe(0);
  commitAll(repo, 'a secret');
  state = tempDir('interrupt-state');
}, 10 * 60_000);

describe('a build interrupted in setup.sh', () => {
  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('%s: ramboot undoes every mount and removes its temporary directory before it exits', async (signal, code) => {
    const b = await buildUntilSetup();
    expect(workDirs()).toHaveLength(1);
    b.child.kill(signal);
    const r = await b.child;
    expect(r.exitCode, b.stderr()).toBe(code);
    expect(b.stderr()).toMatch(new RegExp(`ramboot build: interrupted by ${signal} during run setup.sh; everything it had mounted or written is removed`));
    expect(b.stderr()).not.toMatch(/^\s+at /m);
    expect(mountsUnder(state)).toEqual([]);
    expect(workDirs()).toEqual([]);
    expect(existsSync(b.images) ? readdirSync(b.images) : []).toEqual([]);
  }, 10 * 60_000);

  it('SIGKILL leaves the mounts; the next build sweeps them, and no plaintext of the secret is left anywhere', async () => {
    const b = await buildUntilSetup();
    b.child.kill('SIGKILL');
    await b.child;
    // What a killed build cannot undo: this is what the next build must clean. Its
    // sandbox died with it (bwrap --die-with-parent): no setup.sh keeps the mount busy.
    expect(mountsUnder(join(state, 'cache', 'tmp')).length).toBeGreaterThanOrEqual(1);
    await until(() => sandboxedSleeps().length === 0);
    expect(sandboxedSleeps()).toEqual([]);
    const next = await buildUntilSetup();
    expect(next.stderr()).toMatch(/build: warning: removed what an interrupted build left: .*build-[0-9a-f]{8}-[0-9a-f]{8}-pid\d+-[0-9a-f]{8}/);
    next.child.kill('SIGTERM');
    await next.child;
    expect(mountsUnder(state)).toEqual([]);
    expect(workDirs()).toEqual([]);
    expect([...plaintextUnder(state), ...plaintextUnder('/dev/shm')]).toEqual([]);
  }, 10 * 60_000);
});
