import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commitAll, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { buildRepo, ramboot, SHARED_STATE, tempDir, type Built } from '../helpers/ramboot.js';

// Reproducible builds and segment reuse, on Alpine offline (fixtures minirootfs + a
// local apk repository), so the package stage takes seconds.

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
