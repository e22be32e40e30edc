import { existsSync, mkdirSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runSandboxed, type Bind, type Sandbox } from './sandbox.js';
import type { Work } from './work.js';
import type { Source } from './source.js';
import { copyIntoImage, lstatOf } from './skeleton.js';

// bins/ is a Go module; every main package in it becomes a static binary in
// /usr/local/bin (CGO off, so it runs on musl as on glibc). Reproducible flags.

/** Inside the sandbox: the module, where the programs go, and Go's caches (kept between builds). */
const SRC = '/build/src';
const OUT = '/build/out';
const CACHE = '/build/cache';

/**
 * go build runs in the build's sandbox: it sees the host's /usr (the Go toolchain)
 * read-only, the module and its output, Go's caches, and the network (to fetch the
 * modules go.sum pins, checked against Go's checksum database); nothing else of the
 * host. With cgo off it runs no code of the repository's.
 */
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
  const cache = join(cacheDir, 'go');
  for (const d of [out, cache]) mkdirSync(d, { recursive: true });
  const box: Sandbox = {
    binds: [
      ...hostSystem(),
      { source: src, target: SRC },
      { source: out, target: OUT },
      { source: cache, target: CACHE },
    ],
    symlinks: hostSystemLinks(),
    tmpfs: ['/tmp'],
    network: true,
    cwd: SRC,
    env: {
      HOME: '/tmp',
      GOENV: 'off',
      CGO_ENABLED: '0',
      GOTOOLCHAIN: 'auto',
      GOFLAGS: '-mod=mod',
      GOCACHE: `${CACHE}/go-build`,
      GOMODCACHE: `${CACHE}/go-mod`,
      GOPATH: `${CACHE}/gopath`,
    },
  };
  await runSandboxed(work, box, ['go', 'build', '-trimpath', '-ldflags=-s -w -buildid=', '-o', `${OUT}/`, './...'], { step: 'build the Go programs in bins/' });
  const built = readdirSync(out).sort();
  for (const name of built) copyIntoImage(join(out, name), root, `usr/local/bin/${name}`, 0o755);
  return built;
}

/** What Go needs to run and to fetch modules: /usr, and the few files of /etc its resolver and TLS read. */
function hostSystem(): Bind[] {
  const dirs = ['/usr', ...TOP_DIRS.filter((d) => isRealDir(d)), '/etc/ssl', '/etc/resolv.conf', '/etc/hosts', '/etc/nsswitch.conf'];
  return dirs.filter((d) => existsSync(d)).map((d) => ({ source: d, target: d, readOnly: true }));
}

/** /bin, /lib… as the host has them: links into /usr on a merged-/usr system like Debian 12. */
const TOP_DIRS = ['/bin', '/sbin', '/lib', '/lib32', '/lib64'];

function hostSystemLinks(): { target: string; path: string }[] {
  return TOP_DIRS.filter((d) => isLink(d)).map((d) => ({ target: readlinkSync(d), path: d }));
}

const isLink = (p: string) => !!lstatOf(p)?.isSymbolicLink();
const isRealDir = (p: string) => !!lstatOf(p)?.isDirectory();
