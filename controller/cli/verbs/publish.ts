import { resolve } from 'node:path';
import { build } from '../../../builder/build.js';
import { imageDirs, parseRef, publish, pull, type Pulled, type RegistryRef } from '../../../image/oci.js';
import { readManifest } from '../../../image/manifest.js';
import { decrypt, encrypt } from '../../../secrets/age.js';
import { loadIdentities } from '../../../secrets/identity.js';
import { openMachine } from '../../open-machine.js';
import { size, type Renderer } from '../../render.js';

// `ramboot publish`: a built image into an OCI registry (image/oci.ts), the secrets
// segment sealed to the repository's recipients. `ramboot deploy --registry` pulls it
// back on a site controller that never builds (pullImage).

export interface PublishVerbOptions {
  repo: string;
  rev?: string;
  image?: string;
  state?: string;
  identity?: string;
  registry: string;
  render: Renderer;
  stdout: NodeJS.WritableStream;
  signal?: AbortSignal;
}

export async function publishCommand(o: PublishVerbOptions): Promise<number> {
  const ref = parseRef(o.registry);
  const machine = await openMachine({ repo: o.repo, rev: o.rev, state: o.state });
  const imageDir = o.image
    ? resolve(o.image)
    : (await build({ repoDir: machine.repo, rev: o.rev, imagesDir: machine.state.images, cacheDir: machine.state.cache, origin: machine.origin, identity: o.identity, emit: o.render.emit, signal: o.signal })).imageDir;
  const manifest = await readManifest(imageDir);
  const recipients = machine.config.secrets.recipients;
  const r = await publish(imageDir, ref, {
    signal: o.signal,
    seal: (plain) => encrypt(plain, recipients),
    onBlob: (file, sent, bytes) => o.render.emit({ kind: 'stage', source: 'registry', message: sent ? `sent ${file} (${size(bytes)})` : `${file}: the registry has it` }),
  });
  o.render.end();
  o.stdout.write(`published build ${manifest.buildId} to ${ref.text}@${r.digest} (${r.blobs} blob(s), ${size(r.bytes)} sent; secrets sealed to ${recipients.length} recipient(s))\n`);
  return 0;
}

/** The image a registry reference names, pulled into `imagesDir`; only the files no image there has are fetched. */
export async function pullImage(ref: RegistryRef, imagesDir: string, identity: string | undefined, render: Renderer, signal?: AbortSignal): Promise<Pulled> {
  const identities = await loadIdentities({ path: identity, env: process.env, repoDir: process.cwd() });
  const got = await pull(ref, imagesDir, {
    signal,
    unseal: (sealed) => decrypt(sealed, identities),
    have: imageDirs(imagesDir),
    onBlob: (file, fetched, bytes) => render.emit({ kind: 'stage', source: 'registry', message: fetched ? `fetched ${file} (${size(bytes)})` : `${file}: already here` }),
  });
  render.emit({ kind: 'stage', source: 'registry', message: `pulled build ${got.manifest.buildId} from ${ref.text}@${got.digest}: ${got.blobs} blob(s), ${size(got.bytes)}` });
  return got;
}
