import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alpineConfig, localMirror, makeRepo, minimalAlpineFiles, MINIROOTFS } from '../helpers/apk.js';
import { serveDirectory, type HttpMirror } from '../helpers/http-mirror.js';
import { expectNothingLeft } from '../helpers/leftovers.js';
import { CLI, freePort, initRepo, SHARED_STATE, tempDir } from '../helpers/ramboot.js';

// The tests' local apk mirror lives in the shared test state: the operator allows it there.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

// A build that meets a network fault says what it fetched, from where, why it failed in
// words and what to do, with no stack trace; it exits 75 (try again later) when the
// network is to blame and 1 when the address is wrong; and it leaves nothing behind.
// "No route" is a network namespace with only a loopback device, which is down.

interface Failed {
  exitCode: number;
  stderr: string;
  /** The error the user reads: ramboot's last words. */
  message: string;
}

describe('a build that cannot fetch what it needs', () => {
  let work: string;

  beforeAll(() => {
    work = tempDir('network');
  });

  afterAll(() => {
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  /** Builds `repo` with a state of its own (so nothing comes from a cache), optionally with no network at all. */
  async function failingBuild(repo: string, opts: { noNetwork?: boolean; env?: Record<string, string> } = {}): Promise<Failed> {
    const state = join(work, `state-${Math.random().toString(36).slice(2)}`);
    const images = join(state, 'published');
    const argv = ['node', CLI, 'build', '--repo', repo, '--state', state, '--images', images];
    const [cmd, ...args] = opts.noNetwork ? ['unshare', '--net', ...argv] : argv;
    const r = await execa(cmd!, args, { reject: false, stdin: 'ignore', env: { ...process.env, ...opts.env } });
    const stderr = String(r.stderr);
    expect(stderr, 'a stack trace').not.toMatch(/^\s+at /m);
    expectNothingLeft(state, images, [state]);
    return { exitCode: r.exitCode ?? -1, stderr, message: stderr.slice(stderr.lastIndexOf('ramboot build:')) };
  }

  it('a fresh `ramboot init` repository with no route to the Alpine mirror: exit 75, the minirootfs URL, DNS, and distro.mirror', async () => {
    const { repo, env } = await initRepo('alpine');
    const r = await failingBuild(repo, { noNetwork: true, env });
    expect(r.exitCode, r.stderr).toBe(75);
    expect(r.message).toContain(
      'failed to download the Alpine minirootfs from https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz',
    );
    expect(r.message).toContain('the name does not resolve');
    expect(r.message).toContain('try again');
    expect(r.message).toContain('distro.mirror in ramboot.yaml to a local mirror directory');
  });

  it('apk with no route to the mirror: exit 75, the repository URL and the cause', async () => {
    // The minirootfs is local; the packages would come from the official mirror.
    const yaml = alpineConfig(localMirror()).replace(/mirror: .*\n/, 'mirror: https://dl-cdn.alpinelinux.org/alpine/v3.20\n').replace('  allow_untrusted: true\n', '');
    const repo = makeRepo({ ...minimalAlpineFiles(localMirror()), 'ramboot.yaml': yaml });
    const r = await failingBuild(repo, { noNetwork: true });
    expect(r.exitCode, r.stderr).toBe(75);
    expect(r.message).toContain('failed to fetch the package index of https://dl-cdn.alpinelinux.org/alpine/v3.20/main');
    expect(r.message).toMatch(/the name does not resolve/);
    expect(r.message).toContain('distro.mirror');
  });

  it('apk against a port where nothing listens: exit 75, "connection refused" and the URL', async () => {
    const port = await freePort();
    const yaml = alpineConfig(localMirror()).replace(/mirror: .*\n/, `mirror: http://127.0.0.1:${port}/alpine/v3.20\n`);
    const repo = makeRepo({ ...minimalAlpineFiles(localMirror()), 'ramboot.yaml': yaml });
    const r = await failingBuild(repo);
    expect(r.exitCode, r.stderr).toBe(75);
    expect(r.message).toContain(`failed to fetch the package index of http://127.0.0.1:${port}/alpine/v3.20/main: the connection was refused`);
  });

  describe('a mirror that answers 404', () => {
    let server: HttpMirror;

    beforeAll(async () => {
      // It has the minirootfs and no package index.
      const root = join(work, 'www');
      mkdirSync(join(root, 'alpine/v3.20/releases/x86_64'), { recursive: true });
      copyFileSync(MINIROOTFS, join(root, 'alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz'));
      server = await serveDirectory(root);
    });

    afterAll(async () => {
      await server?.close();
    });

    function config(minirootfsUrl: string): string {
      return alpineConfig(localMirror())
        .replace(/mirror: .*\n/, `mirror: ${server.url}/alpine/v3.20\n`)
        .replace('  allow_untrusted: true\n', '')
        .replace(/url: .*\n/, `url: ${minirootfsUrl}\n`);
    }

    it('for the minirootfs: exit 1, the URL, HTTP 404, and the keys to check', async () => {
      const url = `${server.url}/alpine/v3.20/releases/x86_64/no-such-minirootfs.tar.gz`;
      const repo = makeRepo({ ...minimalAlpineFiles(localMirror()), 'ramboot.yaml': config(url) });
      const r = await failingBuild(repo);
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.message).toContain(`failed to download the Alpine minirootfs from ${url}: the server answered HTTP 404 (Not Found)`);
      expect(r.message).toContain('distro.minirootfs.url');
    });

    it('for the package index: exit 1, the repository URL and HTTP 404', async () => {
      const url = `${server.url}/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz`;
      const repo = makeRepo({ ...minimalAlpineFiles(localMirror()), 'ramboot.yaml': config(url) });
      const r = await failingBuild(repo);
      expect(r.exitCode, r.stderr).toBe(1);
      // The minirootfs came from the server; the index did not.
      expect(server.requests).toContain('/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz');
      expect(server.requests).toContain('/alpine/v3.20/main/x86_64/APKINDEX.tar.gz');
      expect(r.message).toContain(`failed to fetch the package index of ${server.url}/alpine/v3.20/main: there is no such file there (HTTP 404)`);
      expect(r.message).toContain('distro.mirror');
    });
  });

  it('mmdebstrap with no route to the Debian mirror: exit 75, the URL apt fetched and DNS', async () => {
    const { repo, env } = await initRepo('debian');
    const r = await failingBuild(repo, { noNetwork: true, env });
    expect(r.exitCode, r.stderr).toBe(75);
    expect(r.message).toMatch(/failed to download Debian packages from http:\/\/\S+\/dists\/bookworm\S*InRelease: the name does not resolve/);
    expect(r.message).toContain('distro.mirror');
  });
});
