import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SiteRecord } from '../../controller/site.js';
import { commitAll, keyedAlpineRepo, writeFiles } from '../helpers/apk.js';
import { CLI, ramboot, tempDir } from '../helpers/ramboot.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

// The site controller's loop (`ramboot up --registry`) with a real registry
// (docker-registry on loopback), without a virtual NAS: the machine is a local sshd
// standing in for the NAS, whose host key is not the image's, so each deploy stops there
// and is recorded. The end-to-end file deploys to a virtual NAS for real.

let registry: TestRegistry;
let sshd: TestSshd;
let repo: string;
let env: Record<string, string>;

beforeAll(async () => {
  registry = await startRegistry();
  sshd = await startSshd();
  ({ repo, env } = await keyedAlpineRepo((config) => {
    config.host = { name: 'remote-site', address: '127.0.0.1', port: sshd.port, identity: sshd.clientKey };
  }));
}, 10 * 60_000);

afterAll(async () => {
  await registry?.stop();
  await sshd?.stop();
});

describe('ramboot up --registry: a site controller following a tag (stand-in NAS: a local sshd)', () => {
  let site: ResultPromise;
  let out = '';
  let state: string;
  const ref = () => `${registry.host}/nas/remote:main`;
  const record = (): SiteRecord | undefined => {
    try {
      return JSON.parse(readFileSync(join(state, 'site.json'), 'utf8')) as SiteRecord;
    } catch {
      return undefined;
    }
  };
  const until = async <T>(what: string, get: () => T | undefined, ms = 3 * 60_000): Promise<T> => {
    const end = Date.now() + ms;
    for (;;) {
      const v = get();
      if (v !== undefined) return v;
      if (site.exitCode !== null || Date.now() > end) throw new Error(`no ${what}:\n${out.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const publish = async () => {
    const r = await ramboot(['publish', '--repo', repo, '--registry', ref()], env);
    expect(r.exitCode, r.stderr).toBe(0);
    return /@(sha256:[0-9a-f]{64})/.exec(r.stdout)![1]!;
  };

  afterAll(async () => {
    if (site?.pid && site.exitCode === null) process.kill(site.pid, 'SIGTERM');
    await site;
  });

  it('started before anything is published, it keeps asking; once published, it pulls the image and deploys it, and records how that ended', async () => {
    state = tempDir('site-state');
    site = execa('node', [CLI, 'up', '--registry', ref(), '--state', state], { env: { ...process.env, ...env }, reject: false, stdin: 'ignore' });
    site.stdout!.on('data', (d: Buffer) => (out += d));
    site.stderr!.on('data', (d: Buffer) => (out += d));
    await until('word that the tag is not there yet', () => (/attempt 1; asking again/.test(out) ? true : undefined));
    expect(out).toMatch(/manifests\/main/);
    const digest = await publish();
    const r = await until('record of the first image', () => (record()?.digest === digest ? record() : undefined));
    // The stand-in presents another host key than the image's: refused before anything is written.
    expect(r.outcome).toBe('upload-failed');
    expect(r.message).toMatch(/host key mismatch/);
    expect(out).toMatch(/^ramboot deploys remote-site from \S+ \(a site controller: it pulls, never builds/m);
  }, 5 * 60_000);

  it('a new publish is picked up at the next look; the same digest is not tried again', async () => {
    const deploys = () => (out.match(/deploying build /g) ?? []).length;
    const before = deploys();
    writeFiles(repo, { 'root/etc/site-test': 'second\n' });
    commitAll(repo, 'a second image for the site');
    const digest = await publish();
    await until('record of the second image', () => (record()?.digest === digest ? true : undefined), 2 * 60_000);
    expect(deploys()).toBe(before + 1);
    // Another look at the tag (every 20 s) changes nothing.
    await new Promise((r) => setTimeout(r, 25_000));
    expect(deploys()).toBe(before + 1);
  }, 5 * 60_000);

  it('a blob altered in the registry is refused by digest and recorded, and nothing is deployed', async () => {
    const deploys = (out.match(/deploying build /g) ?? []).length;
    writeFiles(repo, { 'root/etc/site-test': 'third\n' });
    commitAll(repo, 'a third image, whose blob will be altered');
    const staged = await ramboot(['publish', '--repo', repo, '--registry', `${registry.host}/nas/remote:staged`], env);
    expect(staged.exitCode, staged.stderr).toBe(0);
    const mediaType = 'application/vnd.oci.image.manifest.v1+json';
    const bytes = Buffer.from(await (await fetch(`http://${registry.host}/v2/nas/remote/manifests/staged`, { headers: { accept: mediaType } })).arrayBuffer());
    const oci = JSON.parse(bytes.toString('utf8')) as { config: { digest: string }; layers: { digest: string; annotations?: Record<string, string> }[] };
    const config = JSON.parse(gunzipSync(Buffer.from(await (await fetch(`http://${registry.host}/v2/nas/remote/blobs/${oci.config.digest}`)).arrayBuffer())).toString('utf8'));
    // The overlay: the one file the site does not have yet (a file it has is taken from its own copy).
    const overlay = config.segments.find((x: { name: string }) => x.name === 'overlay').file;
    const target = oci.layers.find((l) => l.annotations?.['org.opencontainers.image.title'] === overlay)!;
    const data = readFileSync(registry.blobPath(target.digest));
    data[data.length >> 1] ^= 0xff;
    writeFileSync(registry.blobPath(target.digest), data);
    expect((await fetch(`http://${registry.host}/v2/nas/remote/manifests/main`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes })).status).toBe(201);
    const digest = /@(sha256:[0-9a-f]{64})/.exec(staged.stdout)![1]!;
    const r = await until('record of the altered image', () => (record()?.digest === digest ? record() : undefined), 2 * 60_000);
    expect(r.outcome).toBe('refused');
    expect((out.match(/deploying build /g) ?? []).length).toBe(deploys);
    expect(r.message).toMatch(new RegExp(`the blob of ${overlay} hashes to sha256:[0-9a-f]{64}, not ${target.digest}; nothing was written`));
  }, 5 * 60_000);
});
