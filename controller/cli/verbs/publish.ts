import { resolve } from 'node:path';
import { build } from '../../../builder/build.js';
import { imageDirs, parseRef, repositoryOf, publish, pull, type Pulled, type RegistryLogin, type RegistryRef } from '../../../image/oci.js';
import { UsageError } from '../../../lib/errors.js';
import { readPrivateFile } from '../../../lib/private-file.js';
import { readManifest } from '../../../image/manifest.js';
import { decrypt, encrypt } from '../../../secrets/age.js';
import { loadIdentities } from '../../../secrets/identity.js';
import { gitSource, listMachines } from '../../../builder/source.js';
import { openMachine } from '../../open-machine.js';
import { size, type Renderer } from '../../render.js';

// `ramboot publish`: a built image into an OCI registry (image/oci.ts), the secrets
// segment sealed to the repository's recipients. `ramboot deploy --registry` pulls it
// back on a site controller that never builds (pullImage).

export interface PublishVerbOptions {
  repo: string;
  rev?: string;
  /** The machine, in a repository that describes several. */
  machine?: string;
  image?: string;
  state?: string;
  identity?: string;
  registry: string;
  /** --registry-login FILE: USER:TOKEN. */
  loginFile?: string;
  render: Renderer;
  stdout: NodeJS.WritableStream;
  signal?: AbortSignal;
}

export async function publishCommand(o: PublishVerbOptions): Promise<number> {
  const ref = parseRef(o.registry);
  if (ref.pinned) throw new UsageError(`ramboot publish --registry ${o.registry}: publish to a tag (HOST[:PORT]/NAME[:TAG]), not a digest: the digest is the image's, known once it is pushed`, { step: 'publish', input: o.registry });
  // A repository of several machines, none named: each machine to a registry repository of its own, NAME/MACHINE.
  const machines = o.machine || o.image ? [] : await listMachines(await gitSource(resolve(o.repo), o.rev));
  for (const machine of machines) {
    const own = parseRef(`${repositoryOf(ref)}/${machine}:${ref.reference}`);
    await publishOne({ ...o, machine }, own);
  }
  if (machines.length === 0) await publishOne(o, ref);
  return 0;
}

async function publishOne(o: PublishVerbOptions, ref: RegistryRef): Promise<void> {
  const machine = await openMachine({ repo: o.repo, rev: o.rev, machine: o.machine, state: o.state });
  const imageDir = o.image
    ? resolve(o.image)
    : (await build({ repoDir: machine.repo, rev: o.rev, machine: machine.machine, imagesDir: machine.state.images, cacheDir: machine.state.cache, origin: machine.origin, identity: o.identity, emit: o.render.emit, signal: o.signal })).imageDir;
  const manifest = await readManifest(imageDir);
  const recipients = machine.config.secrets.recipients;
  const r = await publish(imageDir, ref, {
    signal: o.signal,
    login: registryLogin(o.loginFile, process.env),
    seal: (plain) => encrypt(plain, recipients),
    onBlob: (file, sent, bytes) => o.render.emit({ kind: 'stage', source: 'registry', message: sent ? `sent ${file} (${size(bytes)})` : `${file}: the registry has it` }),
  });
  o.render.end();
  o.stdout.write(`published build ${manifest.buildId}${machine.machine ? ` of machine ${machine.machine}` : ''} to ${ref.text}@${r.digest} (${r.blobs} blob(s), ${size(r.bytes)} sent; secrets sealed to ${recipients.length} recipient(s))\n`);
}

/** The image a registry reference names, pulled into `imagesDir`; only the files no image there has are fetched. */
export async function pullImage(ref: RegistryRef, imagesDir: string, o: { identity?: string; loginFile?: string; render: Renderer; signal?: AbortSignal }): Promise<Pulled> {
  const identities = await loadIdentities({ path: o.identity, env: process.env, repoDir: process.cwd() });
  const got = await pull(ref, imagesDir, {
    signal: o.signal,
    login: registryLogin(o.loginFile, process.env),
    unseal: (sealed) => decrypt(sealed, identities),
    have: imageDirs(imagesDir),
    onBlob: (file, fetched, bytes) => o.render.emit({ kind: 'stage', source: 'registry', message: fetched ? `fetched ${file} (${size(bytes)})` : `${file}: already here` }),
  });
  o.render.emit({ kind: 'stage', source: 'registry', message: `pulled build ${got.manifest.buildId} from ${ref.text}@${got.digest}: ${got.blobs} blob(s), ${size(got.bytes)}` });
  return got;
}

/**
 * The login for a registry that asks for one: USER:TOKEN from --registry-login FILE (a
 * file only its owner reads), else $RAMBOOT_REGISTRY_USERNAME and $RAMBOOT_REGISTRY_PASSWORD.
 */
export function registryLogin(file: string | undefined, env: Record<string, string | undefined>): RegistryLogin | undefined {
  if (file) {
    const text = readPrivateFile(resolve(file), 'the registry login').trim();
    const at = text.indexOf(':');
    if (at <= 0) throw new UsageError(`failed to read the registry login ${file}: write it as USER:TOKEN on one line`, { step: 'registry login', input: file });
    return { username: text.slice(0, at), password: text.slice(at + 1) };
  }
  const username = env.RAMBOOT_REGISTRY_USERNAME;
  const password = env.RAMBOOT_REGISTRY_PASSWORD;
  if (!username && !password) return undefined;
  if (!username || !password) throw new UsageError('failed to read the registry login: set both RAMBOOT_REGISTRY_USERNAME and RAMBOOT_REGISTRY_PASSWORD, or neither', { step: 'registry login' });
  return { username, password };
}
