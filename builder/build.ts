import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RAMBOOT_VERSION } from '../lib/package.js';
import type { Config } from '../lib/config-schema.js';
import { BuildError, CommandError, UsageError } from '../lib/errors.js';
import type { Emit } from '../lib/events.js';
import { agentFiles, earlyArgs, SEALED_TOOLS, sealedFiles, type AgentFile } from '../image/agent.js';
import { readEnrollment, sealedRecipients, TPM_RECIPIENT, type Enrollment } from '../secrets/sealed.js';
import { buildBins } from './bins.js';
import { runInRoot } from './chroot.js';
import type { DistroBackend } from './distro/backend.js';
import { alpine } from './distro/alpine.js';
import { debian } from './distro/debian.js';
import { MANIFEST, MANIFEST_FORMAT, type Manifest, type Segment } from '../image/manifest.js';
import { requireKernel, findBootFile } from './kernel.js';
import { deletions, overlayDirs, withOverlay } from './overlay.js';
import { mediumFromFstab } from './fstab.js';
import { pidTag, removeBuildDir, sweepLeftovers } from './sweep.js';
import type { BuildEvent, Work } from './work.js';
import { parsePackages } from './packages.js';
import { renderRelease } from '../image/release.js';
import { decryptSecrets, sealedEntries, secretEntries, type ImageSecret } from './secrets.js';
import { packBase, packOverlay, unlinkFirst, type PackedTree } from './segments.js';
import { applySkeleton, ensureDirs, imagePath, writeImageFile } from './skeleton.js';
import { dirSource, gitSource, parseSourceConfig, selectMachine, type Source } from './source.js';
import { packageStage } from './stage.js';
import { writeSegment } from './segment.js';

// The build, as numbered stages: repository → package stage → overlay (skeleton, bins,
// setup.sh) → segments → manifest → published image. Cheap checks come first; the
// image directory appears only when everything succeeded.

export interface BuildOptions {
  repoDir: string;
  rev?: string;
  /** Build this working directory instead of a commit. */
  dir?: string;
  /** The machine, in a repository that describes several (machines/NAME/). */
  machine?: string;
  /** Published images go here, one directory per build id. */
  imagesDir: string;
  /** Package stages, base segments, downloads; the build's temporary directories under tmp/. */
  cacheDir: string;
  /** The repository's path or URL, recorded in the manifest (it keys the state directory). */
  origin: string;
  identity?: string;
  /**
   * Build without decrypting anything: the secrets segment is empty and the manifest
   * names the secrets only. What `ramboot plan` builds, without the controller's identity.
   */
  withoutSecrets?: boolean;
  /** Install the packages anew instead of reusing the cached stage: a refresh picks up updates. */
  fresh?: boolean;
  emit?: Emit<BuildEvent>;
  /** Aborted by Ctrl-C or SIGTERM: the running command stops, mounts are undone, nothing is published. */
  signal?: AbortSignal;
}

export interface BuildResult {
  buildId: string;
  imageDir: string;
  manifest: Manifest;
  stageReused: boolean;
  baseReused: boolean;
}

/**
 * The secrets' mtime is fixed, like the base's: the segment stays byte-identical from one
 * commit to the next until a secret changes, and is then neither rebuilt nor re-sent.
 */
const SECRETS_MTIME = 0;

const BACKENDS: Record<Config['distro']['name'], DistroBackend> = { alpine, debian };

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const started = Date.now();
  const work: Work = { emit: opts.emit ?? (() => {}), signal: opts.signal };
  // Seven stages, numbered; one with nothing to do says so, so that the count holds.
  const stage = (n: number, message: string) => work.emit({ kind: 'stage', source: 'build', message, step: { n, of: 7 } });
  requireRoot();
  const { cacheDir, imagesDir } = opts;
  const tmpDir = ensure(join(cacheDir, 'tmp'));
  ensure(imagesDir);
  await sweepLeftovers([tmpDir, join(cacheDir, 'stages'), join(cacheDir, 'base'), imagesDir], work);

  stage(1, 'reading the repository');
  const source = await selectMachine(opts.dir ? await dirSource(opts.dir) : await gitSource(opts.repoDir, opts.rev), opts.machine);
  const config = await parseSourceConfig(source);
  const packages = parsePackages((await source.readFile('packages'))?.toString() ?? '', 'packages');
  const enrollment = await requireEnrollment(source, config);
  let secrets: ImageSecret[] = [];
  if (!opts.withoutSecrets) {
    stage(2, 'decrypting secrets');
    secrets = await decryptSecrets(source, config, opts.repoDir, opts.identity, work);
  } else stage(2, 'no secrets (built without them)');

  const backend = BACKENDS[config.distro.name];
  stage(3, `installing packages (${backend.name}: ${packages.length} listed)`);
  const stageReq = {
    config,
    packages,
    cacheDir: ensure(join(cacheDir, 'packages', backend.name)),
    resolvePath: (x: string) => (x.startsWith('/') ? x : join(opts.dir ?? opts.repoDir, x)),
    repoDir: opts.dir ?? opts.repoDir,
    readFile: (path: string) => source.readFile(path),
  };
  const packaged = await packageStage(backend, stageReq, cacheDir, work, { fresh: opts.fresh });
  // The installed versions are inputs too: a refresh that brings updates is another build.
  const inputsHash = sha256(JSON.stringify({ ramboot: RAMBOOT_VERSION, tree: source.treeHash, packages: packaged.packages }));
  const buildId = `${source.commit?.slice(0, 8) ?? 'dir'}-${inputsHash.slice(0, 8)}`;

  const workDir = join(tmpDir, `build-${buildId}-${pidTag()}-${randomBytes(4).toString('hex')}`);
  mkdirSync(workDir, { recursive: true, mode: 0o700 });
  try {
    const dirs = overlayDirs(workDir);
    const { services, medium } = await withOverlay(packaged.root, dirs, work, async (root) => {
      stage(4, 'applying root/');
      await applySkeleton(source, config, root);
      stage(5, 'building bins/');
      await buildBins(source, root, workDir, cacheDir, work);
      for (const s of secrets) ensureDirs(root, s.path.split('/').slice(0, -1).join('/'));
      const setup = await source.readFile('setup.sh');
      if (setup) {
        stage(6, 'running setup.sh');
        await runSetup(root, setup.toString(), { buildId, network: config.build.network }, work);
      } else stage(6, 'no setup.sh');
      // After setup.sh, so that every image has them whatever setup.sh did.
      for (const f of agentFiles(config)) addAgentFile(root, f);
      if (enrollment) {
        requireTools(root, SEALED_TOOLS, 'secrets.at_rest is tpm');
        for (const f of sealedFiles(config)) addAgentFile(root, f);
      }
      writeImageFile(root, 'etc/ramboot-release', Buffer.from(renderRelease({ commit: source.commit, buildId, time: source.time })), 0o644);
      return { services: listServices(root), medium: mediumFromFstab(root, config.boot.medium) };
    });

    stage(7, 'packing segments');
    const d = await deletions(dirs.upper);
    const kernel = requireKernel(config.boot.kernel, dirs.upper, packaged.root, d);
    const ucode = config.boot.ucode ? findBootFile(config.boot.ucode, dirs.upper, packaged.root, d) : undefined;
    const out = join(imagesDir, `.tmp-${buildId}-${pidTag()}-${randomBytes(4).toString('hex')}`);
    mkdirSync(out, { recursive: true, mode: 0o700 });
    try {
      const base = await packBase(packaged, d, join(cacheDir, 'base'), join(out, 'base.cpio.zst'));
      const overlay = await packOverlay(dirs.upper, join(out, 'overlay.cpio.zst'), new Set(base.linked));
      // A secret that replaces a hardlinked name must not write through to the other names.
      const linked = new Set([...base.linked, ...overlay.linked]);
      const plain = secretEntries(secrets, dirs.upper, packaged.root, SECRETS_MTIME);
      const inSegment = enrollment ? await sealedEntries(plain, enrollment, config, SECRETS_MTIME) : plain;
      const secretSeg = await writeSegment(unlinkFirst(inSegment, linked), join(out, 'secrets.cpio.zst'), { mode: 0o600, whole: true });
      copyFileSync(kernel.path, join(out, 'vmlinuz'));
      if (ucode) copyFileSync(ucode.path, join(out, 'ucode.img'));
      const manifest: Manifest = {
        formatVersion: MANIFEST_FORMAT,
        buildId,
        commit: source.commit,
        commitTime: source.time,
        inputsHash,
        origin: opts.origin,
        ...(source.machine ? { machine: source.machine.name } : {}),
        distro: { name: backend.name, release: config.distro.release ?? '', arch: config.distro.arch ?? '' },
        host: config.host.name,
        settings: { host: config.host, boot: config.boot, trial: config.trial, health: config.health },
        kernel: { file: 'vmlinuz', ...fileDigest(join(out, 'vmlinuz')), version: kernel.name },
        ...(ucode ? { ucode: { file: 'ucode.img', ...fileDigest(join(out, 'ucode.img')) } } : {}),
        segments: [
          segment('base', base.segment.sha256, base.segment.bytes),
          segment('overlay', overlay.segment.sha256, overlay.segment.bytes),
          segment('secrets', secretSeg.sha256, secretSeg.bytes),
        ],
        packages: packaged.packages,
        services,
        files: mergeFiles(base, overlay, secrets),
        hostKey: hostKeyLine(secrets, config),
        ...(enrollment ? { sealed: { recipients: sealedRecipients(enrollment, config) } } : {}),
        append: [earlyArgs(config.trial), config.boot.append].filter(Boolean).join(' '),
        medium,
      };
      writeFileSync(join(out, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
      const imageDir = publish(out, imagesDir, buildId);
      work.emit({ kind: 'built', source: 'build', buildId, commit: source.commit, ms: Date.now() - started, stageReused: packaged.reused, baseReused: base.reused });
      return { buildId, imageDir, manifest, stageReused: packaged.reused, baseReused: base.reused };
    } catch (err) {
      rmSync(out, { recursive: true, force: true });
      throw err;
    }
  } finally {
    await removeBuildDir(workDir, work);
  }
}

/** A build mounts overlayfs and sandboxes: checked before anything else is read. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new UsageError('failed to start the build: ramboot build must run as root (it mounts overlayfs and chroots); run it with sudo', {
      step: 'build',
    });
  }
}

/** With secrets.at_rest: tpm, the machine's enrollment the commit records; a commit without one cannot be built. */
async function requireEnrollment(source: Source, config: Config): Promise<Enrollment | undefined> {
  if (config.secrets.at_rest !== 'tpm') return undefined;
  const enrollment = await readEnrollment((path) => source.readFile(path));
  if (!enrollment) {
    throw new UsageError(
      `failed to build ${source.label}: secrets.at_rest is tpm, but no machine is enrolled (${TPM_RECIPIENT} is missing); ` +
        'run `ramboot secrets enroll` against the running machine and commit what it writes',
      { step: 'read source', input: TPM_RECIPIENT },
    );
  }
  return enrollment;
}

/** Commands the image must have for what ramboot adds to it; a missing one is named with the fix. */
function requireTools(root: string, tools: string[], why: string): void {
  const dirs = ['usr/bin', 'bin', 'usr/sbin', 'sbin'];
  // lstat: a tool may be an absolute symlink, which means the image's path, not the build host's.
  const has = (path: string) => {
    try {
      lstatSync(path);
      return true;
    } catch {
      return false;
    }
  };
  const missing = tools.filter((t) => !dirs.some((d) => has(join(root, d, t))));
  if (missing.length > 0) {
    throw new UsageError(
      `failed to build: ${why}, and the image lacks ${missing.join(', ')}; add the packages that bring them to packages (Debian: tpm2-tools age cpio openssh-client; Alpine: tpm2-tools age openssh-keygen)`,
      { step: 'check image', input: 'packages' },
    );
  }
}

async function runSetup(root: string, script: string, o: { buildId: string; network: boolean }, work: Work): Promise<void> {
  try {
    await runInRoot(root, script, 'run setup.sh', work, { network: o.network, env: { RAMBOOT_BUILD: o.buildId } });
  } catch (err) {
    if (err instanceof CommandError) {
      const tail = (err.output ?? '').trimEnd().split('\n').slice(-15).join('\n');
      throw new BuildError(`failed to run setup.sh: it exited with ${err.exitCode}; its last lines:\n${tail}`, {
        step: 'setup.sh',
        input: 'setup.sh',
        output: err.output,
      });
    }
    throw err;
  }
}

function addAgentFile(root: string, f: AgentFile): void {
  const path = f.path.replace(/^\//, '');
  if (f.type === 'file') return writeImageFile(root, path, f.data, f.mode);
  const dest = imagePath(root, path);
  rmSync(dest, { force: true });
  symlinkSync(f.data.toString(), dest);
}

function listServices(root: string): Record<string, string[]> {
  const dir = join(root, 'etc/runlevels');
  if (!existsSync(dir)) return {};
  const out: Record<string, string[]> = {};
  for (const level of readdirSync(dir).sort()) out[level] = readdirSync(join(dir, level)).sort();
  return out;
}

function mergeFiles(base: PackedTree, overlay: PackedTree, secrets: ImageSecret[]): Manifest['files'] {
  const files = new Map<string, Manifest['files'][number]>();
  for (const f of base.files) files.set(f.path, { ...f, segment: 'base' });
  for (const f of overlay.files) files.set(f.path, { ...f, segment: 'overlay' });
  for (const s of secrets) files.set(s.path, { path: s.path, mode: s.mode, size: s.data.length, segment: 'secrets' });
  return [...files.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
}

function hostKeyLine(secrets: ImageSecret[], config: Config): string | undefined {
  return secrets.find((s) => s.path === config.secrets.host_key)?.publicLine;
}

function publish(tmp: string, imagesDir: string, buildId: string): string {
  const final = join(imagesDir, buildId);
  if (existsSync(final)) {
    // The same inputs were built before: swap in the new copy, then drop the old one.
    const old = `${final}.old-${randomBytes(4).toString('hex')}`;
    renameSync(final, old);
    renameSync(tmp, final);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, final);
  }
  return final;
}

function segment(name: Segment['name'], sha256: string, bytes: number): Segment {
  return { name, file: `${name}.cpio.zst`, sha256, bytes };
}

function fileDigest(path: string): { sha256: string; bytes: number } {
  const data = readFileSync(path);
  return { sha256: sha256(data), bytes: data.length };
}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function ensure(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

