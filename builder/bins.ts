import { chmodSync, chownSync, copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runStep, type Work } from './work.js';
import type { Source } from './source.js';
import { ensureDirs } from './skeleton.js';

// bins/ is a Go module; every main package in it becomes a static binary in
// /usr/local/bin (CGO off, so it runs on musl as on glibc). Reproducible flags.

export async function buildBins(source: Source, root: string, workDir: string, cacheDir: string, work: Work): Promise<string[]> {
  const files = await source.list('bins');
  if (!files.some((f) => f.path === 'bins/go.mod')) return [];
  const src = join(workDir, 'bins-src');
  for (const f of files) {
    const dest = join(src, f.path.slice('bins/'.length));
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, await f.read());
  }
  const out = join(workDir, 'bins-out');
  mkdirSync(out, { recursive: true });
  await runStep(work, 'go', ['build', '-trimpath', '-ldflags=-s -w -buildid=', '-o', `${out}/`, './...'], {
    step: 'build the Go programs in bins/',
    cwd: src,
    env: {
      ...process.env,
      CGO_ENABLED: '0',
      GOTOOLCHAIN: 'auto',
      GOFLAGS: '-mod=mod',
      GOCACHE: join(cacheDir, 'go-build'),
      GOMODCACHE: join(cacheDir, 'go-mod'),
      GOPATH: join(cacheDir, 'go'),
    },
  });
  ensureDirs(root, 'usr/local/bin');
  const built = readdirSync(out).sort();
  for (const name of built) {
    const dest = join(root, 'usr/local/bin', name);
    copyFileSync(join(out, name), dest);
    chmodSync(dest, 0o755);
    chownSync(dest, 0, 0);
  }
  return built;
}
