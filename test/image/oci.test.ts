import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packTree } from '../../builder/segment.js';
import { MANIFEST_FORMAT, type Manifest } from '../../image/manifest.js';
import { imageDirs, parseRef, publish, pull, type OciManifest } from '../../image/oci.js';
import { decrypt, encrypt } from '../../secrets/age.js';
import { readIdentityFile } from '../../secrets/identity.js';
import { freePort } from '../helpers/ramboot.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

// Images through a real OCI registry (Debian's docker-registry on loopback): what is
// pushed, what a second controller pulls, and what it refuses. The images are small ones
// made here (real segments, a stand-in kernel file); the real age CLI reads the sealed blob.

const PROBE = 'PROBE-secret-never-in-the-registry-7f3a';

let registry: TestRegistry;
let work: string;
let identityFile: string;
let recipient: string;

beforeAll(async () => {
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), 'ramboot-oci-test-'));
  identityFile = join(work, 'identity.txt');
  execFileSync('age-keygen', ['-o', identityFile], { stdio: 'ignore' });
  recipient = execFileSync('age-keygen', ['-y', identityFile], { encoding: 'utf8' }).trim();
}, 120_000);
afterAll(async () => {
  await registry?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** An image directory as `ramboot build` lays it out (docs/ARCHITECTURE.md): vmlinuz, the segments, manifest.json. */
async function makeImage(name: string, overlayText: string): Promise<{ dir: string; manifest: Manifest }> {
  const dir = join(work, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const trees = { base: { 'usr/lib/libbig.so': randomSeeded('base', 400_000) }, overlay: { 'etc/motd': overlayText }, secrets: { 'etc/ssh/ssh_host_ed25519_key': `${PROBE}\n` } };
  const segments = [];
  for (const [seg, files] of Object.entries(trees)) {
    const tree = join(work, `${name}-${seg}`);
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(join(tree, path, '..'), { recursive: true });
      writeFileSync(join(tree, path), content);
    }
    const file = `${seg}.cpio.zst`;
    const r = await packTree(tree, join(dir, file), { mtime: () => 0, whole: seg === 'secrets' });
    segments.push({ name: seg as 'base' | 'overlay' | 'secrets', file, sha256: r.sha256, bytes: r.bytes });
  }
  const kernel = randomSeeded('kernel', 200_000);
  const kfile = 'vmlinuz';
  writeFileSync(join(dir, kfile), kernel);
  const manifest = {
    formatVersion: MANIFEST_FORMAT,
    buildId: `${sha256(Buffer.from(name)).slice(0, 8)}-${sha256(Buffer.from(overlayText)).slice(0, 8)}`,
    commit: sha256(Buffer.from(name)).slice(0, 40),
    commitTime: 1_700_000_000,
    inputsHash: sha256(Buffer.from(overlayText)),
    origin: '/srv/nas.git',
    distro: { name: 'alpine', release: '3.20', arch: 'x86_64' },
    host: 'nas',
    kernel: { file: kfile, sha256: sha256(kernel), bytes: kernel.length },
    segments,
    files: [],
  } as unknown as Manifest;
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return { dir, manifest };
}

/** The same bytes for the same seed: images that share a base share its blob. */
function randomSeeded(seed: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  let block = createHash('sha256').update(seed).digest();
  for (let i = 0; i < bytes; i += block.length) {
    block.copy(out, i);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

const seal = (plain: Uint8Array) => encrypt(plain, [recipient]);
const unseal = async (sealed: Uint8Array) => decrypt(sealed, await readIdentityFile(identityFile));

/** A blob pushed as a client would (POST, then PUT with its digest). */
async function pushBlob(data: Buffer): Promise<void> {
  const start = await fetch(`http://${registry.host}/v2/nas/evil/blobs/uploads/`, { method: 'POST' });
  const put = new URL(start.headers.get('location')!, `http://${registry.host}/`);
  put.searchParams.set('digest', `sha256:${sha256(data)}`);
  expect((await fetch(put, { method: 'PUT', body: new Uint8Array(data) })).status).toBe(201);
}

/** Every blob file in the registry's storage. */
function storedBlobs(): string[] {
  const root = join(registry.storage, 'docker/registry/v2/blobs/sha256');
  if (!existsSync(root)) return [];
  return readdirSync(root).flatMap((xx) => readdirSync(join(root, xx)).map((d) => join(root, xx, d, 'data')));
}

describe('images through an OCI registry (real docker-registry)', () => {
  it('reads a registry reference; loopback over http, others over https; a bad one says how to write it', () => {
    expect(parseRef('127.0.0.1:5000/nas/frood')).toMatchObject({ base: 'http://127.0.0.1:5000', repository: 'nas/frood', reference: 'latest' });
    expect(parseRef('ghcr.io/someone/frood:v2')).toMatchObject({ base: 'https://ghcr.io', repository: 'someone/frood', reference: 'v2' });
    const digest = `sha256:${'a'.repeat(64)}`;
    expect(parseRef(`ghcr.io/someone/frood@${digest}`)).toMatchObject({ reference: digest, pinned: digest });
    expect(() => parseRef('https://ghcr.io/x')).toThrow(/write it as HOST\[:PORT\]\/NAME\[:TAG\] or HOST\[:PORT\]\/NAME@sha256:DIGEST/);
  });

  it('publish sends each boot file once and the secrets only as age ciphertext; a second controller pulls the image whole and verified', async () => {
    const a = await makeImage('a', 'first motd\n');
    const ref = parseRef(`${registry.host}/nas/frood:latest`);
    const pushed = await publish(a.dir, ref, { seal });
    // kernel, base, overlay, secrets, and the config (ramboot's manifest)
    expect(pushed.blobs).toBe(5);

    // No blob holds the secrets in plaintext, compressed or not; the sealed one opens with the age CLI.
    const secrets = a.manifest.segments.find((s) => s.name === 'secrets')!;
    const plainSecrets = readFileSync(join(a.dir, secrets.file));
    let sealedSeen = 0;
    for (const blob of storedBlobs()) {
      const data = readFileSync(blob);
      expect(sha256(data)).not.toBe(secrets.sha256);
      expect(data.includes(PROBE)).toBe(false);
      let unpacked: Buffer | undefined;
      try {
        unpacked = execFileSync('zstd', ['-dc'], { input: data, stdio: ['pipe', 'pipe', 'ignore'] });
      } catch {
        unpacked = undefined;
      }
      expect(unpacked?.includes(PROBE) ?? false).toBe(false);
      if (data.subarray(0, 21).toString() === 'age-encryption.org/v1') {
        sealedSeen++;
        expect(execFileSync('age', ['-d', '-i', identityFile], { input: data }).equals(plainSecrets)).toBe(true);
      }
    }
    expect(sealedSeen).toBe(1);

    const site = join(work, 'site-images');
    // What a pull killed before its rename left: the next pull removes it.
    const dead = execFileSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).trim();
    mkdirSync(join(site, `.pull-pid${dead}-0000`), { recursive: true });
    writeFileSync(join(site, `.pull-pid${dead}-0000`, 'half'), 'x');
    const got = await pull(ref, site, { unseal });
    expect(readdirSync(site)).toEqual([a.manifest.buildId]);
    expect(got.imageDir).toBe(join(site, a.manifest.buildId));
    // The config (ramboot's manifest), the kernel, base, overlay and secrets.
    expect(got.blobs).toBe(5);
    for (const f of [a.manifest.kernel, ...a.manifest.segments]) {
      expect(sha256(readFileSync(join(got.imageDir, f.file)))).toBe(f.sha256);
    }
    expect(statSync(join(got.imageDir, secrets.file)).mode & 0o777).toBe(0o600);
    expect(statSync(got.imageDir).mode & 0o777).toBe(0o700);
    // Pinned by the digest publish printed (NAME@sha256:…): the same image, its manifest checked against the pin.
    expect((await pull(parseRef(`${ref.text.replace(/:latest$/, '')}@${pushed.digest}`), join(work, 'site-pinned'), { unseal })).manifest.buildId).toBe(a.manifest.buildId);
    expect(JSON.parse(readFileSync(join(got.imageDir, 'manifest.json'), 'utf8'))).toEqual(a.manifest);
    const oci = (await (await fetch(`http://${registry.host}/v2/nas/frood/manifests/latest`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as OciManifest;
    expect(oci.artifactType).toBe('application/vnd.ramboot.image.v1');
    expect(oci.annotations['org.opencontainers.image.revision']).toBe(a.manifest.commit);
  });

  it('a root/-only change: publish sends the overlay, the secrets sealed anew and the manifest; the site pulls only the overlay', async () => {
    const a = await makeImage('a', 'first motd\n');
    const b = await makeImage('b', 'second motd\n');
    const ref = parseRef(`${registry.host}/nas/frood:next`);
    await publish(a.dir, ref, { seal });
    const site = join(work, 'site-b');
    await pull(ref, site, { unseal });
    const pushed = await publish(b.dir, ref, { seal });
    expect(pushed.blobs).toBe(3);
    const got = await pull(ref, site, { unseal, have: imageDirs(site) });
    const overlay = b.manifest.segments.find((s) => s.name === 'overlay')!;
    // Kernel, base and the secrets (the same plaintext, sealed anew) come from the image the site had:
    // what is fetched is the manifest, its config and the overlay.
    const config = gzipSync(readFileSync(join(b.dir, 'manifest.json')), { level: 9 }).length;
    expect(got.blobs).toBe(2);
    expect(got.bytes).toBeGreaterThan(overlay.bytes + config);
    expect(got.bytes).toBeLessThan(overlay.bytes + config + 4096);
    for (const f of [b.manifest.kernel, ...b.manifest.segments]) {
      expect(sha256(readFileSync(join(got.imageDir, f.file)))).toBe(f.sha256);
    }
    expect(imageDirs(site).length).toBe(2);
  });

  it('a blob altered in the registry\'s storage is refused by digest, and nothing is written', async () => {
    const c = await makeImage('c', 'third motd\n');
    const ref = parseRef(`${registry.host}/nas/frood:altered`);
    await publish(c.dir, ref, { seal });
    const overlay = c.manifest.segments.find((s) => s.name === 'overlay')!;
    const oci = (await (await fetch(`http://${registry.host}/v2/nas/frood/manifests/altered`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as OciManifest;
    const layer = oci.layers.find((l) => l.annotations?.['org.opencontainers.image.title'] === overlay.file)!;
    const data = readFileSync(registry.blobPath(layer.digest));
    data[data.length >> 1] ^= 0xff;
    writeFileSync(registry.blobPath(layer.digest), data);
    const site = join(work, 'site-c');
    await expect(pull(ref, site, { unseal })).rejects.toThrow(new RegExp(`^refusing ${ref.text.replace(/[.]/g, '\\.')} \\(sha256:[0-9a-f]{64}\\): the blob of ${overlay.file} hashes to sha256:[0-9a-f]{64}, not ${layer.digest}; nothing was written$`));
    expect(existsSync(site) ? readdirSync(site) : []).toEqual([]);
  });

  it('a site whose identity does not open the sealed secrets gets an error and no image', async () => {
    const d = await makeImage('d', 'fourth motd\n');
    const ref = parseRef(`${registry.host}/nas/frood:sealed`);
    await publish(d.dir, ref, { seal });
    const other = join(work, 'other-identity.txt');
    execFileSync('age-keygen', ['-o', other], { stdio: 'ignore' });
    const site = join(work, 'site-d');
    await expect(pull(ref, site, { unseal: async (s) => decrypt(s, await readIdentityFile(other)) })).rejects.toThrow(
      /^refusing \S+ \(sha256:[0-9a-f]{64}\): its secrets do not decrypt with this site's identity \(.*\); add its recipient to secrets\.recipients and publish again; nothing was written$/,
    );
    expect(existsSync(site) ? readdirSync(site) : []).toEqual([]);
  });

  it('a manifest whose file names would leave the image directory, or replace its manifest.json, is refused before anything is fetched', async () => {
    for (const title of ['..', 'manifest.json', '.hidden']) {
      const image = await makeImage(`e${title.length}`, `motd ${title}\n`);
      const m = JSON.parse(readFileSync(join(image.dir, 'manifest.json'), 'utf8'));
      const layers = [];
      for (const f of [m.kernel, ...m.segments] as { file: string }[]) {
        const data = readFileSync(join(image.dir, f.file));
        await pushBlob(data);
        layers.push({ mediaType: 'application/vnd.ramboot.segment.v1.cpio+zstd', digest: `sha256:${sha256(data)}`, size: data.length, annotations: { 'org.opencontainers.image.title': f.file === m.kernel.file ? title : f.file } });
      }
      m.kernel.file = title;
      const config = gzipSync(JSON.stringify(m));
      await pushBlob(config);
      const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.ramboot.manifest.v1+json+gzip', digest: `sha256:${sha256(config)}`, size: config.length }, layers };
      const put = await fetch(`http://${registry.host}/v2/nas/evil/manifests/latest`, { method: 'PUT', body: JSON.stringify(manifest), headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
      expect(put.status, await put.text()).toBe(201);
      const site = join(work, `site-evil-${title.length}`);
      await expect(pull(parseRef(`${registry.host}/nas/evil`), site, { unseal })).rejects.toThrow(/are not distinct plain file names; nothing was written$/);
      expect(existsSync(site) ? readdirSync(site) : []).toEqual([]);
    }
  });

  it('an unreachable registry is a retry-later error naming the URL', async () => {
    const port = await freePort();
    const ref = parseRef(`127.0.0.1:${port}/nas/frood`);
    await expect(pull(ref, join(work, 'nowhere'), { unseal })).rejects.toMatchObject({
      kind: 'retry',
      message: `failed to fetch the manifest from http://127.0.0.1:${port}/v2/nas/frood/manifests/latest: the connection was refused (nothing listens there); try again when the registry is reachable`,
    });
  });
});

describe('a registry that asks for a login (real docker-registry: htpasswd, and a Bearer token service stand-in as GHCR has)', () => {
  const login = { username: 'ci-bot', password: 'tok-3f9a1c' };
  for (const kind of ['basic', 'token'] as const) {
    it(`${kind}: publish and pull with the login; without it, or with a wrong one, an error that says what to set`, async () => {
      const reg = await startRegistry({ kind, ...login });
      try {
        const image = await makeImage(`auth-${kind}`, `motd ${kind}\n`);
        const ref = parseRef(`${reg.host}/nas/frood:main`);
        await expect(publish(image.dir, ref, { seal })).rejects.toThrow(/the registry wants a login; set RAMBOOT_REGISTRY_USERNAME and RAMBOOT_REGISTRY_PASSWORD \(a token\), or pass --registry-login FILE/);
        const wrong = { ...login, password: 'nope' };
        const refused = await publish(image.dir, ref, { seal, login: wrong }).catch((e: Error) => e);
        expect(String(refused)).toMatch(kind === 'basic' ? /the registry refused the login of ci-bot/ : /it refused the login of ci-bot \(HTTP 401\); check the user and token/);
        expect(String(refused)).not.toContain(wrong.password);
        const pushed = await publish(image.dir, ref, { seal, login });
        expect(pushed.blobs).toBe(5);
        const got = await pull(ref, join(work, `site-auth-${kind}`), { unseal, login });
        expect(got.manifest.buildId).toBe(image.manifest.buildId);
        expect(got.blobs).toBe(5);
      } finally {
        await reg.stop();
      }
    });
  }
});
