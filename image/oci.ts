import { createHash, randomBytes } from 'node:crypto';
import { existsSync, linkSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { RambootError, TransientError, UsageError } from '../lib/errors.js';
import { faultOfError, faultOfStatus } from '../lib/net.js';
import { PRIVATE_FILE, makePrivateDir } from '../lib/private-file.js';
import { MANIFEST, MANIFEST_FORMAT, readManifestSync, type Manifest } from './manifest.js';

// An image as an OCI artifact, through the registry HTTP API (the OCI distribution spec):
// the boot files are blobs, ramboot's manifest.json is the config blob, and the OCI
// manifest names them by digest. A puller fetches only the files it has no copy of and
// checks every digest. The secrets segment never goes in plaintext: it is published
// age-encrypted (the caller seals and unseals), and its plaintext is checked against
// ramboot's manifest after decryption. No client library: the API is a handful of
// requests, and Node's fetch speaks them.
//
// What a pull proves is that the files are the ones the OCI manifest names. Who made
// that manifest is the registry's to say (who may push to the tag), unless the reference
// pins its digest (NAME@sha256:…), which the pull then checks.

export const MEDIA = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  artifact: 'application/vnd.ramboot.image.v1',
  /** ramboot's manifest.json, gzipped: it lists every file of the image, and every pull fetches it. */
  config: 'application/vnd.ramboot.manifest.v1+json+gzip',
  kernel: 'application/vnd.ramboot.kernel.v1',
  segment: 'application/vnd.ramboot.segment.v1.cpio+zstd',
  sealed: 'application/vnd.ramboot.segment.v1.cpio+zstd+age',
} as const;

const TITLE = 'org.opencontainers.image.title';
/** A ramboot manifest is a few hundred KiB; a registry answering more is refused before it fills memory. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
/** A file name or build id from a registry becomes a path component: no dots first, no separators. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface RegistryRef {
  /** http://host:port or https://host: plain http only for loopback. */
  base: string;
  repository: string;
  /** A tag or a digest (sha256:…): what the manifest is fetched by. */
  reference: string;
  /** Set when the reference pins the manifest's digest. */
  pinned?: string;
  /** As the user wrote it, for messages. */
  text: string;
}

/** `host[:port]/path[:tag|@sha256:…]`; loopback registries are spoken to over plain http, others over https. */
export function parseRef(text: string): RegistryRef {
  const m = /^([a-z0-9.-]+(?::\d+)?)\/([a-z0-9]+(?:(?:[._]|__|-+|\/)[a-z0-9]+)*)(?::([A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(sha256:[0-9a-f]{64}))?$/.exec(text);
  if (!m) {
    throw new UsageError(`failed to read the registry reference "${text}": write it as HOST[:PORT]/NAME[:TAG] or HOST[:PORT]/NAME@sha256:DIGEST, e.g. registry.example.org/nas/frood:latest`, {
      step: 'parse registry reference',
      input: text,
    });
  }
  const host = m[1]!;
  const loopback = /^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$/.test(host);
  const pinned = m[4];
  return { base: `${loopback ? 'http' : 'https'}://${host}`, repository: m[2]!, reference: pinned ?? m[3] ?? 'latest', ...(pinned ? { pinned } : {}), text };
}

/** The registry repository, without tag or digest: what a site's state is keyed by. */
export function repositoryOf(ref: RegistryRef): string {
  return `${ref.base.replace(/^https?:\/\//, '')}/${ref.repository}`;
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
  /** Blobs sent or fetched (the rest the other side already had); a pull counts the config blob, and its bytes the OCI manifest too. */
  blobs: number;
  bytes: number;
  /** The OCI manifest's digest: what a puller may pin (NAME@sha256:…). */
  digest: string;
}

const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
/** Text from a registry, safe to print: no control characters, not too long. */
const printable = (s: unknown) => String(s).replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 200);

/** A login for a registry that asks for one (a user and a token or password). */
export interface RegistryLogin {
  username: string;
  password: string;
}

class Registry {
  /** What the registry accepted last: sent with every request until it asks again (a token for another scope). */
  private authorization?: string;

  constructor(
    readonly ref: RegistryRef,
    readonly signal?: AbortSignal,
    readonly login?: RegistryLogin,
  ) {}

  url(path: string): string {
    return `${this.ref.base}/v2/${this.ref.repository}/${path}`;
  }

  async request(what: string, url: string, init: RequestInit = {}, ok: number[] = [200]): Promise<Response> {
    let res = await this.send(what, url, init);
    if (res.status === 401) {
      const challenge = res.headers.get('www-authenticate') ?? '';
      await res.body?.cancel();
      this.authorization = await this.answer(challenge, url);
      res = await this.send(what, url, init);
    }
    if (!ok.includes(res.status)) {
      const body = printable((await res.text()).trim());
      const why = res.status === 401 ? `the registry refused the login${this.login ? ` of ${printable(this.login.username)}` : ''}` : body;
      throw fail(what, faultOfStatus(url, res.status, why), this.ref);
    }
    return res;
  }

  private async send(what: string, url: string, init: RequestInit): Promise<Response> {
    const headers = { ...(init.headers as Record<string, string>), ...(this.authorization ? { authorization: this.authorization } : {}) };
    try {
      return await fetch(url, { ...init, headers, signal: this.signal });
    } catch (err) {
      if (this.signal?.aborted) throw err;
      throw fail(what, faultOfError(url, err), this.ref, err);
    }
  }

  /** The Authorization a 401's challenge asks for: Basic with the login, or a Bearer token from the registry's token service. */
  private async answer(challenge: string, url: string): Promise<string> {
    const scheme = /^(\w+)\s*(.*)$/.exec(challenge.trim());
    const params = Object.fromEntries([...(scheme?.[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]));
    const basic = this.login && `Basic ${Buffer.from(`${this.login.username}:${this.login.password}`).toString('base64')}`;
    const needLogin = () =>
      new UsageError(
        `failed to reach ${url}: the registry wants a login; set RAMBOOT_REGISTRY_USERNAME and RAMBOOT_REGISTRY_PASSWORD (a token), or pass --registry-login FILE (USER:TOKEN, readable by its owner only)`,
        { step: 'registry', input: this.ref.text },
      );
    if (scheme?.[1]?.toLowerCase() === 'basic') {
      if (!basic) throw needLogin();
      return basic;
    }
    if (scheme?.[1]?.toLowerCase() !== 'bearer' || !params.realm) {
      throw new RambootError(`failed to reach ${url}: the registry asks for a login ramboot does not know (${printable(challenge) || 'no challenge'})`, { step: 'registry', input: this.ref.text });
    }
    const tokenUrl = new URL(params.realm);
    if (params.service) tokenUrl.searchParams.set('service', params.service);
    if (params.scope) tokenUrl.searchParams.set('scope', params.scope);
    let res: Response;
    try {
      res = await fetch(tokenUrl, { headers: basic ? { authorization: basic } : {}, signal: this.signal });
    } catch (err) {
      if (this.signal?.aborted) throw err;
      throw fail('get a token from', faultOfError(tokenUrl.toString(), err), this.ref, err);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      if (!basic) throw needLogin();
      throw new UsageError(`failed to get a token from ${tokenUrl.origin}${tokenUrl.pathname}: it refused the login of ${printable(this.login!.username)} (HTTP ${res.status}); check the user and token`, { step: 'registry', input: this.ref.text });
    }
    if (!res.ok) throw fail('get a token from', faultOfStatus(tokenUrl.toString(), res.status), this.ref);
    const body = (await res.json().catch(() => ({}))) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new RambootError(`failed to get a token from ${tokenUrl.origin}${tokenUrl.pathname}: its answer holds no token`, { step: 'registry', input: this.ref.text });
    return `Bearer ${token}`;
  }

  async hasBlob(digest: string): Promise<boolean> {
    return (await this.request('look for a blob at', this.url(`blobs/${digest}`), { method: 'HEAD' }, [200, 404])).status === 200;
  }

  /** A monolithic upload: POST for a session, PUT to where it says, with the digest. */
  async putBlob(data: Buffer, digest: string): Promise<void> {
    const startUrl = this.url('blobs/uploads/');
    const start = await this.request('start a blob upload at', startUrl, { method: 'POST' }, [202]);
    await start.body?.cancel();
    const location = start.headers.get('location');
    if (!location) throw new RambootError(`failed to upload a blob to ${this.ref.text}: ${startUrl} answered 202 without a Location`, { step: 'registry', input: this.ref.text });
    const put = new URL(location, startUrl);
    put.search = `${put.search ? `${put.search}&` : '?'}digest=${encodeURIComponent(digest)}`;
    const done = await this.request('upload a blob to', put.toString(), { method: 'PUT', body: new Uint8Array(data.buffer, data.byteOffset, data.length) as Uint8Array<ArrayBuffer>, headers: { 'content-type': 'application/octet-stream' } }, [201]);
    await done.body?.cancel();
  }

  /** The bytes a descriptor names, refused when more arrive than it says. */
  async getBlob(d: Descriptor): Promise<Uint8Array> {
    const res = await this.request('fetch a blob from', this.url(`blobs/${d.digest}`));
    return readAtMost(res, d.size, `the blob ${d.digest}`, this.ref);
  }
}

function fail(what: string, fault: { url: string; cause: string; transient: boolean }, ref: RegistryRef, cause?: unknown): RambootError {
  const ctx = { step: 'registry', input: ref.text };
  const message = `failed to ${what} ${fault.url}: ${fault.cause}`;
  return fault.transient ? new TransientError(`${message}; try again when the registry is reachable`, ctx, { cause }) : new RambootError(message, ctx, { cause });
}

async function readAtMost(res: Response, max: number, what: string, ref: RegistryRef): Promise<Uint8Array> {
  const said = Number(res.headers.get('content-length') ?? 0);
  if (said > max) {
    await res.body?.cancel();
    throw new RambootError(`refusing ${ref.text}: ${what} is ${said} bytes, more than the ${max} its manifest says`, { step: 'pull', input: ref.text });
  }
  const data = new Uint8Array(await res.arrayBuffer());
  if (data.length > max) throw new RambootError(`refusing ${ref.text}: ${what} is ${data.length} bytes, more than the ${max} its manifest says`, { step: 'pull', input: ref.text });
  return data;
}

interface BootFile {
  file: string;
  sha256: string;
  mediaType: string;
  segment?: string;
}

/** The image's boot files in boot order: what the layers are. */
function bootFiles(m: Manifest): BootFile[] {
  return [
    { file: m.kernel.file, sha256: m.kernel.sha256, mediaType: MEDIA.kernel },
    ...(m.ucode ? [{ file: m.ucode.file, sha256: m.ucode.sha256, mediaType: MEDIA.segment }] : []),
    ...m.segments.map((s) => ({ file: s.file, sha256: s.sha256, mediaType: s.name === 'secrets' ? MEDIA.sealed : MEDIA.segment, segment: s.name })),
  ];
}

export interface PublishOptions {
  login?: RegistryLogin;
  /** Encrypts the secrets segment: only ciphertext reaches the registry. */
  seal: (plaintext: Uint8Array) => Promise<Uint8Array>;
  onBlob?: (file: string, sent: boolean, bytes: number) => void;
  signal?: AbortSignal;
}

/** Pushes an image directory; blobs the registry already has are not sent again. The tag moves last. */
export async function publish(imageDir: string, ref: RegistryRef, opts: PublishOptions): Promise<Transfer> {
  if (ref.pinned) throw new UsageError(`failed to publish to ${ref.text}: a digest names what is there already; publish to a tag (NAME:TAG)`, { step: 'publish', input: ref.text });
  const m = readManifestSync(imageDir);
  const reg = new Registry(ref, opts.signal, opts.login);
  const out = { blobs: 0, bytes: 0 };
  const push = async (data: Buffer, name: string): Promise<string> => {
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
    const path = join(imageDir, f.file);
    const plain = readFileSync(path);
    // A damaged local copy would move the tag to an image no site accepts.
    if (sha(plain) !== `sha256:${f.sha256}`) {
      throw new RambootError(`failed to publish ${imageDir}: ${path} hashes to ${sha(plain)}, not the sha256 its manifest names; build the commit again`, { step: 'publish', input: path });
    }
    const data = f.segment === 'secrets' ? Buffer.from(await opts.seal(plain)) : plain;
    layers.push({ mediaType: f.mediaType, digest: await push(data, f.file), size: data.length, annotations: { [TITLE]: f.file } });
  }
  // gzip's header holds no time here: the same manifest is the same blob.
  const config = gzipSync(readFileSync(join(imageDir, MANIFEST)), { level: 9 });
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
  const res = await reg.request('push the manifest to', reg.url(`manifests/${ref.reference}`), { method: 'PUT', body, headers: { 'content-type': MEDIA.manifest } }, [201]);
  await res.body?.cancel();
  return { ...out, digest: sha(body) };
}

/**
 * The digest of the manifest a reference names now, from a HEAD request (nothing is
 * fetched): what a site controller compares with the last one before it pulls.
 * Undefined when the registry does not say (then only a pull tells).
 */
export async function manifestDigest(ref: RegistryRef, opts: { login?: RegistryLogin; signal?: AbortSignal }): Promise<string | undefined> {
  const reg = new Registry(ref, opts.signal, opts.login);
  const res = await reg.request('look at the manifest at', reg.url(`manifests/${ref.reference}`), { method: 'HEAD', headers: { accept: MEDIA.manifest } });
  await res.body?.cancel();
  const digest = res.headers.get('docker-content-digest') ?? '';
  return DIGEST.test(digest) ? digest : undefined;
}

export interface PullOptions {
  login?: RegistryLogin;
  /** Decrypts the secrets segment's blob; throws when this site holds no identity for it. */
  unseal: (ciphertext: Uint8Array) => Promise<Uint8Array>;
  /** Image directories whose files may stand for blobs (found by the sha256 their manifest names, hashed again before use). */
  have?: string[];
  onBlob?: (file: string, fetched: boolean, bytes: number) => void;
  signal?: AbortSignal;
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
  const reg = new Registry(ref, opts.signal, opts.login);
  const res = await reg.request('fetch the manifest from', reg.url(`manifests/${ref.reference}`), { headers: { accept: MEDIA.manifest } });
  const body = await readAtMost(res, MAX_MANIFEST_BYTES, 'the manifest', ref);
  const digest = sha(body);
  const refused = (why: string, cause?: unknown) => new RambootError(`refusing ${ref.text} (${digest}): ${why}; nothing was written`, { step: 'pull', input: ref.text }, { cause });
  if (ref.pinned && digest !== ref.pinned) throw refused(`the registry answered a manifest that hashes to ${digest}, not the pinned ${ref.pinned}`);
  const oci = parseJson<OciManifest>(body, 'its OCI manifest', refused);
  if (oci.config?.mediaType !== MEDIA.config) throw refused(`its config is ${printable(oci.config?.mediaType ?? 'missing')}, not a ramboot image (${MEDIA.config})`);
  const descriptors = [oci.config, ...(Array.isArray(oci.layers) ? oci.layers : [])];
  if (descriptors.some((d) => !DIGEST.test(d?.digest) || !Number.isSafeInteger(d?.size) || d.size < 0)) throw refused('a descriptor has no sha256 digest or size');
  const blob = async (d: Descriptor, what: string) => {
    const data = await reg.getBlob(d);
    if (sha(data) !== d.digest) throw refused(`the blob of ${what} hashes to ${sha(data)}, not ${d.digest}`);
    return data;
  };
  let configBytes: Buffer;
  try {
    configBytes = gunzipSync(await blob(oci.config, MANIFEST), { maxOutputLength: MAX_MANIFEST_BYTES });
  } catch (err) {
    if (err instanceof RambootError) throw err;
    throw refused(`its config does not unpack (${printable((err as Error).message)})`, err);
  }
  const m = parseJson<Manifest>(configBytes, 'its ramboot manifest', refused);
  if (m.formatVersion !== MANIFEST_FORMAT) throw refused(`its manifest is format ${printable(m.formatVersion)}, this ramboot reads ${MANIFEST_FORMAT}; publish it with this version`);
  let files: BootFile[];
  try {
    files = bootFiles(m);
  } catch (err) {
    throw refused('its ramboot manifest names no kernel or segments', err);
  }
  if (!SAFE_NAME.test(m.buildId ?? '')) throw refused(`its build id "${printable(m.buildId)}" is not one ramboot writes`);
  if (m.commit !== undefined && !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(m.commit)) throw refused(`its commit "${printable(m.commit)}" is not a git commit id`);
  const names = files.map((f) => f.file);
  if (names.some((n) => !SAFE_NAME.test(n ?? '') || n === MANIFEST) || new Set(names).size !== names.length) throw refused(`its files (${names.map(printable).join(', ')}) are not distinct plain file names`);
  if (oci.layers.length !== files.length || files.some((f, i) => oci.layers[i]!.annotations?.[TITLE] !== f.file)) {
    throw refused(`its layers (${oci.layers.map((l) => printable(l.annotations?.[TITLE])).join(', ')}) are not the files its manifest names (${names.join(', ')})`);
  }
  const final = join(imagesDir, m.buildId);
  // Pulled before (a build id is its commit and inputs): nothing to fetch.
  // The manifest and its config are fetched every time: they say which files the image has.
  const fetched = { blobs: 1, bytes: body.length + oci.config.size };
  if (existsSync(join(final, MANIFEST))) return { imageDir: final, manifest: readManifestSync(final), ...fetched, digest };
  makePrivateDir(imagesDir);
  removeDeadPulls(imagesDir);
  const tmp = join(imagesDir, `.pull-pid${process.pid}-${randomBytes(4).toString('hex')}`);
  makePrivateDir(tmp);
  const out = { ...fetched };
  const copies = copiesIn(opts.have ?? []);
  try {
    for (const [i, f] of files.entries()) {
      const local = copies.get(f.sha256);
      if (local && existsSync(local) && sha(readFileSync(local)) === `sha256:${f.sha256}`) {
        linkSync(local, join(tmp, f.file));
        opts.onBlob?.(f.file, false, 0);
        continue;
      }
      const data = await blob(oci.layers[i]!, f.file);
      out.blobs++;
      out.bytes += data.length;
      let plain = data;
      if (f.segment === 'secrets') {
        try {
          plain = await opts.unseal(data);
        } catch (err) {
          throw refused(`its secrets do not decrypt with this site's identity (${printable((err as Error).message)}); add its recipient to secrets.recipients and publish again`, err);
        }
      }
      if (sha(plain) !== `sha256:${f.sha256}`) throw refused(`${f.file} hashes to ${sha(plain)}, not the sha256 its manifest names`);
      // Created private, not made private after: nobody else may open a secret in between.
      writeFileSync(join(tmp, f.file), plain, { mode: PRIVATE_FILE, flag: 'wx' });
      opts.onBlob?.(f.file, true, data.length);
    }
    writeFileSync(join(tmp, MANIFEST), configBytes, { mode: PRIVATE_FILE, flag: 'wx' });
    try {
      renameSync(tmp, final);
    } catch (err) {
      // Another pull of the same build got there first: its directory is as good as ours.
      if (!existsSync(join(final, MANIFEST))) throw err;
    }
    return { imageDir: final, manifest: readManifestSync(final), ...out, digest };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function parseJson<T>(bytes: Uint8Array, what: string, refused: (why: string, cause?: unknown) => RambootError): T {
  try {
    const v = JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
    if (typeof v !== 'object' || v === null) throw new Error('not an object');
    return v as T;
  } catch (err) {
    throw refused(`${what} is not JSON (${printable((err as Error).message)})`, err);
  }
}

/** The files of earlier images by the sha256 their manifests name. */
function copiesIn(dirs: string[]): Map<string, string> {
  const copies = new Map<string, string>();
  for (const dir of dirs) {
    let m: Manifest;
    try {
      m = readManifestSync(dir);
    } catch {
      // Not an image this ramboot reads: nothing to take from it.
      continue;
    }
    for (const f of bootFiles(m)) if (!copies.has(f.sha256)) copies.set(f.sha256, join(dir, f.file));
  }
  return copies;
}

/** What a pull killed before its rename left (its process is gone). */
function removeDeadPulls(imagesDir: string): void {
  for (const name of readdirSync(imagesDir)) {
    const pid = /^\.pull-pid(\d+)-/.exec(name)?.[1];
    if (!pid || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(imagesDir, name), { recursive: true, force: true });
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
