import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commitAll, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { buildRepo, CLI, ramboot, SHARED_STATE, tempDir, type Built } from '../helpers/ramboot.js';

// The tests' local apk mirror lives in the shared test state: the operator allows it there.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

// Reproducible builds and segment reuse, on Alpine offline (fixtures minirootfs + a
// local apk repository), so the package stage takes seconds.

interface ManifestFile {
  path: string;
  mode: number;
}

interface BuiltWithKernel extends Built {
  kernel: { sha256: string; bytes: number };
}

const sha = (b: Built, name: string) => b.segments.find((s) => s.name === name)!.sha256;

async function buildIn(repo: string, state: string, images: string, extra: string[] = []): Promise<BuiltWithKernel> {
  const r = await ramboot(['build', '--repo', repo, '--state', state, '--images', images, '--json', ...extra]);
  if (r.exitCode !== 0) throw new Error(`ramboot build failed (${r.exitCode}): ${r.stderr.slice(-3000)}`);
  return JSON.parse(r.stdout) as BuiltWithKernel;
}

describe('reproducible Alpine builds', () => {
  let repo: string;
  let work: string;
  let first: BuiltWithKernel;

  beforeAll(async () => {
    repo = makeRepo(minimalAlpineFiles(localMirror()));
    work = tempDir('repro');
    first = await buildIn(repo, SHARED_STATE, join(work, 'images-a'));
  });

  afterAll(() => {
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  it('gives byte-identical segments and kernel when the same commit is built twice from scratch', async () => {
    // A fresh state directory: the package stage and the base are made again, not copied.
    const second = await buildIn(repo, join(work, 'fresh-state'), join(work, 'images-b'));
    expect(second.stageReused).toBe(false);
    expect(second.buildId).toBe(first.buildId);
    expect(second.imageDir).not.toBe(first.imageDir);
    for (const name of ['base', 'overlay', 'secrets']) {
      expect(sha(second, name), name).toBe(sha(first, name));
      const a = readFileSync(join(first.imageDir, `${name}.cpio.zst`));
      const b = readFileSync(join(second.imageDir, `${name}.cpio.zst`));
      expect(a.equals(b), `${name}.cpio.zst differs`).toBe(true);
    }
    expect(second.kernel.sha256).toBe(first.kernel.sha256);
    expect(readFileSync(join(second.imageDir, 'vmlinuz')).equals(readFileSync(join(first.imageDir, 'vmlinuz')))).toBe(true);
  });

  it('reuses the package stage and keeps base byte-identical when only root/ changes', async () => {
    writeFiles(repo, { 'root/etc/motd': 'changed only in root/\n' });
    commitAll(repo, 'root/ only');
    const next = await buildRepo(repo, join(work, 'images-root'), {});
    expect(next.stageReused).toBe(true);
    expect(next.buildId).not.toBe(first.buildId);
    expect(sha(next, 'base')).toBe(sha(first, 'base'));
    expect(readFileSync(join(next.imageDir, 'base.cpio.zst')).equals(readFileSync(join(first.imageDir, 'base.cpio.zst')))).toBe(true);
    expect(sha(next, 'overlay')).not.toBe(sha(first, 'overlay'));
  });

  it('reuses the package stage and keeps base byte-identical when only setup.sh changes', async () => {
    writeFiles(repo, { 'setup.sh': ['#!/bin/sh\nset -e\necho "a different setup.sh" > /var/www/setup.txt\n', 0o755] });
    commitAll(repo, 'setup.sh only');
    const next = await buildRepo(repo, join(work, 'images-setup'), {});
    expect(next.stageReused).toBe(true);
    expect(sha(next, 'base')).toBe(sha(first, 'base'));
    expect(sha(next, 'overlay')).not.toBe(sha(first, 'overlay'));
  });
});

describe('the builder\'s own settings do not reach the image', () => {
  let work: string;

  beforeAll(() => {
    work = tempDir('repro-env');
  });

  afterAll(() => {
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  /** Clones `origin` to `dest` and builds it from scratch (a state of its own) with this umask and environment. */
  async function buildClone(origin: string, dest: string, umask: string, env: Record<string, string>): Promise<BuiltWithKernel & { files: ManifestFile[] }> {
    mkdirSync(join(dest, '..'), { recursive: true });
    const inShell = (cmd: string[]) => execa('sh', ['-c', `umask ${umask} && exec "$@"`, 'sh', ...cmd], { env: { ...process.env, ...env }, stdin: 'ignore', reject: false });
    const clone = await inShell(['git', 'clone', '-q', origin, dest]);
    expect(clone.exitCode, String(clone.stderr)).toBe(0);
    const state = `${dest}-state`;
    const r = await inShell(['node', CLI, 'build', '--repo', dest, '--state', state, '--images', join(state, 'published'), '--json']);
    expect(r.exitCode, String(r.stderr).slice(-3000)).toBe(0);
    const built = JSON.parse(String(r.stdout)) as BuiltWithKernel;
    return { ...built, files: JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8')).files };
  }

  it('the same commit built under umask 022 and 077, from clones at two paths, in two time zones and locales, gives the same bytes and git\'s modes', async () => {
    const origin = makeRepo({
      ...minimalAlpineFiles(localMirror()),
      'root/etc/hosts': '127.0.0.1 localhost\n',
      'root/etc/init.d/hello': ['#!/bin/sh\necho hello\n', 0o755],
      'root/etc/hello/nested/config': 'a new directory two levels deep\n',
      'setup.sh': ['#!/bin/sh\nset -e\nmkdir -p /var/lib/hello\necho "made by setup.sh" > /var/lib/hello/state\n', 0o755],
    });
    const a = await buildClone(origin, join(work, 'a', 'nas'), '022', { TZ: 'UTC', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' });
    const b = await buildClone(origin, join(work, 'b', 'somewhere', 'else', 'machine'), '077', { TZ: 'Pacific/Kiritimati', LANG: 'de_DE.UTF-8', LC_ALL: 'tr_TR.UTF-8' });

    expect(b.buildId).toBe(a.buildId);
    for (const name of ['base', 'overlay', 'secrets']) {
      const same = readFileSync(join(a.imageDir, `${name}.cpio.zst`)).equals(readFileSync(join(b.imageDir, `${name}.cpio.zst`)));
      expect(same, `${name}.cpio.zst differs`).toBe(true);
    }
    expect(b.files).toEqual(a.files);
    const mode = (path: string) => b.files.find((f) => f.path === path)?.mode;
    for (const path of ['etc/hosts', 'etc/hostname', 'etc/ramboot-release', 'etc/hello/nested/config', 'var/lib/hello/state']) expect(mode(path), path).toBe(0o644);
    for (const path of ['etc/init.d/hello', 'etc/hello', 'etc/hello/nested', 'var/lib/hello']) expect(mode(path), path).toBe(0o755);
  });
});
