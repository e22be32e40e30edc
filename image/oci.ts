import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RambootError, TransientError, UsageError } from '../lib/errors.js';
import { MANIFEST, readManifestSync, type Manifest } from './manifest.js';

// An image as an OCI artifact, through the registry HTTP API (the OCI distribution spec):
// the boot files are blobs, ramboot's manifest.json is the config blob, and the OCI
// manifest names them by digest. A puller fetches only the blobs it has no file for and
// checks every digest. The secrets segment never goes in plaintext: it is published
// age-encrypted (the caller encrypts and decrypts), and its plaintext is checked against
// ramboot's manifest after decryption. No client library: the API is five requests,
// and Node's fetch speaks it.

export const MEDIA = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  artifact: 'application/vnd.ramboot.image.v1',
  config: 'application/vnd.ramboot.manifest.v1+json',
  kernel: 'application/vnd.ramboot.kernel.v1',
  segment: 'application/vnd.ramboot.segment.v1.cpio+zstd',
  sealed: 'application/vnd.ramboot.segment.v1.cpio+zstd+age',
} as const;

const TITLE = 'org.opencontainers.image.title';

export interface RegistryRef {
  /** http://host:port or https://host: plain http only for loopback. */
  base: string;
  repository: string;
  tag: string;
  /** As the user wrote it, for messages. */
  text: string;
}

/** `host[:port]/path[:tag]`; loopback registries are spoken to over plain http, others over https. */
export function parseRef(text: string): RegistryRef {
  const m = /^([a-z0-9.-]+(?::\d+)?)\/([a-z0-9]+(?:[._\/-][a-z0-9]+)*)(?::([A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?$/.exec(text);
  if (!m) {
    throw new UsageError(`failed to read the registry reference "${text}": write it as HOST[:PORT]/NAME[:TAG], e.g. registry.example.org/nas/frood:latest`, {
      step: 'parse registry reference',
      input: text,
    });
  }
  const host = m[1]!;
  const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host);
  return { base: `${loopback ? 'http' : 'https'}://${host}`, repository: m[2]!, tag: m[3] ?? 'latest', text };
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations: Record<string, string>;
}

export interface Transfer {
  /** Blobs sent or fetched (the rest the other side already had). */
  blobs: number;
  bytes: number;
  /** The OCI manifest's digest: what a puller may pin. */
  digest: string;
}

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

class Registry {
  constructor(readonly ref: RegistryRef) {}

  url(path: string): string {
    return `${this.ref.base}/v2/${this.ref.repository}/${path}`;
  }

  async request(what: string, url: string, init: RequestInit = {}, ok: number[] = [200]): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch (err) {
      throw new TransientError(`failed to ${what} at ${url}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`, { step: 'registry', input: this.ref.text }, { cause: err });
    }
    if (!ok.includes(res.status)) {
      const body = (await res.text()).slice(0, 300);
      const Kind = res.status >= 500 ? TransientError : RambootError;
      throw new Kind(`failed to ${what} at ${url}: HTTP ${res.status}${body ? ` ${body.trim()}` : ''}`, { step: 'registry', input: this.ref.text });
    }
    return res;
  }

  async hasBlob(digest: string): Promise<boolean> {
    return (await this.request('look for a blob', this.url(`blobs/${digest}`), { method: 'HEAD' }, [200, 404])).status === 200;
  }

  /** A monolithic upload: POST for a session, PUT with the digest. */
  async putBlob(data: Uint8Array, digest: string): Promise<void> {
    const start = await this.request('start a blob upload', this.url('blobs/uploads/'), { method: 'POST' }, [202]);
    const location = new URL(start.headers.get('location') ?? '', this.ref.base);
    location.searchParams.set('digest', digest);
    await this.request('upload a blob', location.toString(), { method: 'PUT', body: Buffer.from(data), headers: { 'content-type': 'application/octet-stream' } }, [201]);
  }

  async getBlob(digest: string): Promise<Uint8Array> {
    return new Uint8Array(await (await this.request('fetch a blob', this.url(`blobs/${digest}`))).arrayBuffer());
  }
}

/** The image's boot files in boot order: what the layers are. */
function bootFiles(m: Manifest): { file: string; sha256: string; mediaType: string; segment?: string }[] {
  return [
    { file: m.kernel.file, sha256: m.kernel.sha256, mediaType: MEDIA.kernel },
    ...(m.ucode ? [{ file: m.ucode.file, sha256: m.ucode.sha256, mediaType: MEDIA.segment }] : []),
    ...m.segments.map((s) => ({ file: s.file, sha256: s.sha256, mediaType: s.name === 'secrets' ? MEDIA.sealed : MEDIA.segment, segment: s.name })),
  ];
}

export interface PublishOptions {
  /** Encrypts the secrets segment: only ciphertext reaches the registry. */
  seal: (plaintext: Uint8Array) => Promise<Uint8Array>;
  onBlob?: (file: string, sent: boolean, bytes: number) => void;
}

/** Pushes an image directory; blobs the registry already has are not sent again. */
export async function publish(imageDir: string, ref: RegistryRef, opts: PublishOptions): Promise<Transfer> {
  const m = readManifestSync(imageDir);
  const reg = new Registry(ref);
  const out = { blobs: 0, bytes: 0 };
  const push = async (data: Uint8Array, name: string): Promise<string> => {
    const digest = sha(data);
    const had = await reg.hasBlob(digest);
    if (!had) {
      await reg.putBlob(data, digest);
      out.blobs++;
      out.bytes += data.length;
    }
    opts.onBlob?.(name, !had, had ? 0 : data.length);
    return digest;
  };
  const layers: Descriptor[] = [];
  for (const f of bootFiles(m)) {
    const plain = readFileSync(join(imageDir, f.file));
    const data = f.segment === 'secrets' ? await opts.seal(plain) : plain;
    layers.push({ mediaType: f.mediaType, digest: await push(data, f.file), size: data.length, annotations: { [TITLE]: f.file } });
  }
  const config = readFileSync(join(imageDir, MANIFEST));
  const manifest: OciManifest = {
    schemaVersion: 2,
    mediaType: MEDIA.manifest,
    artifactType: MEDIA.artifact,
    config: { mediaType: MEDIA.config, digest: await push(config, MANIFEST), size: config.length },
    layers,
    annotations: {
      'org.opencontainers.image.created': new Date(m.commitTime * 1000).toISOString(),
      ...(m.commit ? { 'org.opencontainers.image.revision': m.commit } : {}),
      'org.opencontainers.image.source': m.origin,
      'dev.ramboot.build': m.buildId,
      'dev.ramboot.host': m.host,
    },
  };
  const body = Buffer.from(JSON.stringify(manifest));
  await reg.request('push the manifest', reg.url(`manifests/${ref.tag}`), { method: 'PUT', body, headers: { 'content-type': MEDIA.manifest } }, [201]);
  return { ...out, digest: sha(body) };
}

export interface PullOptions {
  /** Decrypts the secrets segment's blob. */
  unseal: (ciphertext: Uint8Array) => Promise<Uint8Array>;
  /** Image directories whose files may stand for blobs (the same file name is the same content). */
  have?: string[];
  onBlob?: (file: string, fetched: boolean, bytes: number) => void;
}

export interface Pulled extends Transfer {
  imageDir: string;
  manifest: Manifest;
}

/**
 * Fetches the image the reference names into `imagesDir/<build>`: files another image
 * directory has are linked, the rest fetched; every blob is checked against its digest
 * and every file against ramboot's manifest before the directory gets its name.
 */
export async function pull(ref: RegistryRef, imagesDir: string, opts: PullOptions): Promise<Pulled> {
  const reg = new Registry(ref);
  const res = await reg.request('fetch the manifest', reg.url(`manifests/${ref.tag}`), { headers: { accept: MEDIA.manifest } });
  const body = new Uint8Array(await res.arrayBuffer());
  const digest = sha(body);
  const oci = JSON.parse(Buffer.from(body).toString('utf8')) as OciManifest;
  const refused = (why: string) => new RambootError(`refusing ${ref.text} (${digest}): ${why}; nothing was written`, { step: 'pull', input: ref.text });
  if (oci.config?.mediaType !== MEDIA.config) throw refused(`its config is ${oci.config?.mediaType ?? 'missing'}, not a ramboot image (${MEDIA.config})`);
  const blob = async (d: Descriptor, what: string) => {
    const data = await reg.getBlob(d.digest);
    if (sha(data) !== d.digest) throw refused(`the blob of ${what} hashes to ${sha(data)}, not ${d.digest}`);
    return data;
  };
  const configBytes = await blob(oci.config, MANIFEST);
  removeDeadPulls(imagesDir);
  const tmp = join(imagesDir, `.pull-pid${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp, { recursive: true });
  const out = { blobs: 0, bytes: 0 };
  try {
    writeFileSync(join(tmp, MANIFEST), configBytes);
    const m = readManifestSync(tmp);
    if (!/^[0-9a-f]+-[0-9a-f]+$/.test(m.buildId ?? '')) throw refused(`its build id "${m.buildId}" is not one ramboot writes`);
    const files = bootFiles(m);
    if (oci.layers?.length !== files.length || files.some((f, i) => oci.layers[i]!.annotations?.[TITLE] !== f.file || /[/\\]/.test(f.file))) {
      throw refused(`its layers (${(oci.layers ?? []).map((l) => l.annotations?.[TITLE]).join(', ')}) are not the files its manifest names (${files.map((f) => f.file).join(', ')})`);
    }
    const final = join(imagesDir, m.buildId);
    if (existsSync(join(final, MANIFEST))) return { imageDir: final, manifest: readManifestSync(final), ...out, digest };
    for (const [i, f] of files.entries()) {
      const local = (opts.have ?? []).map((d) => join(d, f.file)).find((p) => existsSync(p) && sha(readFileSync(p)) === `sha256:${f.sha256}`);
      if (local) {
        linkSync(local, join(tmp, f.file));
        opts.onBlob?.(f.file, false, 0);
        continue;
      }
      const layer = oci.layers[i]!;
      const data = await blob(layer, f.file);
      out.blobs++;
      out.bytes += data.length;
      const plain = f.segment === 'secrets' ? await opts.unseal(data) : data;
      if (sha(plain) !== `sha256:${f.sha256}`) throw refused(`${f.file} hashes to ${sha(plain)}, not the sha256 its manifest names`);
      writeFileSync(join(tmp, f.file), plain);
      if (f.segment === 'secrets') chmodSync(join(tmp, f.file), 0o600);
      opts.onBlob?.(f.file, true, data.length);
    }
    renameSync(tmp, final);
    return { imageDir: final, manifest: m, ...out, digest };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** What a pull killed before its rename left (its process is gone). */
function removeDeadPulls(imagesDir: string): void {
  if (!existsSync(imagesDir)) return;
  for (const name of readdirSync(imagesDir)) {
    const pid = /^\.pull-pid(\d+)-/.exec(name)?.[1];
    if (!pid || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
    } catch {
      rmSync(join(imagesDir, name), { recursive: true, force: true });
    }
  }
}

/** Image directories under `imagesDir` (what a pull may take files from). */
export function imageDirs(imagesDir: string): string[] {
  if (!existsSync(imagesDir)) return [];
  return readdirSync(imagesDir)
    .filter((n) => !n.startsWith('.'))
    .map((n) => join(imagesDir, n))
    .filter((d) => existsSync(join(d, MANIFEST)));
}
