import { execa } from 'execa';
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootImage, machineFiles, type BootedMachine } from '../helpers/alpine-machine.js';
import { HELLO_PAGE, makeRepo, makeSigningKey, MINIROOTFS_SHA512, signedMirror, type SigningKey } from '../helpers/apk.js';
import { serveDirectory, type HttpMirror } from '../helpers/http-mirror.js';
import { expectNothingLeft } from '../helpers/leftovers.js';
import { CLI, tempDir, type Built } from '../helpers/ramboot.js';

// The Alpine default as a user with internet meets it: the minirootfs downloaded over
// HTTP, a repository whose index is signed (as abuild-sign signs it), and apk checking
// that signature against Alpine's keys and those distro.keys lists; no allow_untrusted.
// The mirror is a real HTTP server on loopback; the keys are made by openssl.

const KEY_NAME = 'ramboot-test-5f1a2b3c.rsa.pub';

describe('an Alpine machine from a signed repository over HTTP', () => {
  let work: string;
  let server: HttpMirror;
  let key: SigningKey;
  /** Another key under the same name: what a repository holds when it committed the wrong file. */
  let impostor: SigningKey;

  beforeAll(async () => {
    work = tempDir('alpine-signed');
    key = makeSigningKey(join(work, 'keys'), KEY_NAME);
    impostor = makeSigningKey(join(work, 'impostor'), KEY_NAME);
    signedMirror(join(work, 'www'), key);
    server = await serveDirectory(join(work, 'www'));
  });

  afterAll(async () => {
    await server?.close();
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  /** ramboot.yaml as a user writes it for this mirror: no allow_untrusted, the mirror's key in distro.keys. */
  function config(keys: string[]): string {
    return `host:
  name: alpine-signed
distro:
  name: alpine
  release: v3.20
  mirror: ${server.url}/alpine/v3.20
${keys.length > 0 ? `  keys:\n${keys.map((k) => `    - ${k}\n`).join('')}` : ''}  minirootfs:
    url: ${server.url}/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz
    sha512: ${MINIROOTFS_SHA512}
boot:
  kernel: vmlinuz-*
  append: console=ttyS0
`;
  }

  /** Builds with a state of its own, so the minirootfs is downloaded and the packages installed anew. */
  async function build(repo: string) {
    const state = join(work, `state-${Math.random().toString(36).slice(2)}`);
    const images = join(state, 'published');
    const r = await execa('node', [CLI, 'build', '--repo', repo, '--state', state, '--images', images, '--json'], { reject: false, stdin: 'ignore' });
    return { ...r, stderr: String(r.stderr), stdout: String(r.stdout), state, images };
  }

  describe('with the key that signed it', () => {
    let repo: string;
    let built: Built;
    let machine: BootedMachine;

    beforeAll(async () => {
      repo = makeRepo({ ...machineFiles(config([`keys/${KEY_NAME}`])), [`keys/${KEY_NAME}`]: readFileSync(key.publicKey, 'utf8') });
      const r = await build(repo);
      if (r.exitCode !== 0) throw new Error(`ramboot build failed (${r.exitCode}): ${r.stderr.slice(-3000)}`);
      built = JSON.parse(r.stdout) as Built;
      machine = await bootImage(built.imageDir, built.buildId, work);
    });

    afterAll(async () => {
      await machine?.stop();
      if (repo) rmSync(dirname(repo), { recursive: true, force: true });
    });

    it('downloads the minirootfs and the signed index from the server and installs the package without allow_untrusted', () => {
      expect(server.requests).toContain('/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz');
      expect(server.requests).toContain('/alpine/v3.20/main/x86_64/APKINDEX.tar.gz');
      expect(server.requests).toContain(`/alpine/v3.20/main/x86_64/${HELLO_PAGE.name}-${HELLO_PAGE.version}.apk`);
      const manifest = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8'));
      expect(manifest.packages).toContainEqual({ name: HELLO_PAGE.name, version: HELLO_PAGE.version });
      // The key the machine's own apk trusts from now on, next to Alpine's.
      expect(manifest.files).toContainEqual(expect.objectContaining({ path: `etc/apk/keys/${KEY_NAME}`, mode: 0o644, segment: 'base' }));
    });

    it('boots and serves the package\'s file', async () => {
      expect(await machine.get('/hello')).toContain('hello from the hello-page package, version 1.2.3');
    });
  });

  it('an index signed by a key the repository does not list is refused, naming the repository and distro.keys', async () => {
    const repo = makeRepo(machineFiles(config([])));
    const r = await build(repo);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    const message = r.stderr.slice(r.stderr.lastIndexOf('ramboot build:'));
    expect(message).toContain(`failed to install Alpine packages from ${server.url}/alpine/v3.20/main: its index is signed by a key this build does not trust (apk: UNTRUSTED signature)`);
    expect(message).toContain('distro.keys');
    expectNothingLeft(r.state, r.images);
    rmSync(dirname(repo), { recursive: true, force: true });
  });

  it('an index whose signature the listed key does not verify is refused, naming the repository', async () => {
    const repo = makeRepo({ ...machineFiles(config([`keys/${KEY_NAME}`])), [`keys/${KEY_NAME}`]: readFileSync(impostor.publicKey, 'utf8') });
    const r = await build(repo);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).not.toMatch(/^\s+at /m);
    const message = r.stderr.slice(r.stderr.lastIndexOf('ramboot build:'));
    expect(message).toContain(`failed to install Alpine packages from ${server.url}/alpine/v3.20/main: its index has a signature that does not match`);
    expect(message).toContain('(apk: BAD signature)');
    expectNothingLeft(r.state, r.images);
    rmSync(dirname(repo), { recursive: true, force: true });
  });

  it('a distro.keys entry that is not a public key is refused before anything is installed', async () => {
    const repo = makeRepo({ ...machineFiles(config([`keys/${KEY_NAME}`])), [`keys/${KEY_NAME}`]: 'not a key\n' });
    const r = await build(repo);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toContain(`failed to read ramboot.yaml distro.keys.0 (keys/${KEY_NAME}): not a PEM public key`);
    expectNothingLeft(r.state, r.images);
    rmSync(dirname(repo), { recursive: true, force: true });
  });
});
