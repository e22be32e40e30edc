import { createHash, createPublicKey } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BuildError, CommandError, UsageError, describe } from '../../lib/errors.js';
import { faultOfError, faultOfStatus, netError, type NetFault } from '../../lib/net.js';
import { runSandboxed, type Bind } from '../sandbox.js';
import { localMirrorDir } from './local-mirror.js';
import { imagePath, writeImageFile } from '../skeleton.js';
import { compareUtf8 } from '../tree.js';
import { runStep } from '../work.js';
import type { DistroBackend, InstalledPackage, StageRequest } from './backend.js';

// Alpine: the official minirootfs (pinned by checksum), then apk inside it, verifying
// the repositories' signatures with Alpine's keys and those distro.keys lists.

/** Minirootfs releases ramboot knows the checksum of, as Alpine publishes them. */
const KNOWN_MINIROOTFS: Record<string, { url: string; sha512: string }> = {
  'v3.20/x86_64': {
    url: 'https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz',
    sha512: '9d5405f61f8a6ebc02461ba75346fbf1a63a4eab8510a0158dd321cee0c4dafe28c2a3d2cb7c3d75e2a8130dae0c3c92382f5b6adeea309eafc97621c5bf6400',
  },
};

const release = (req: StageRequest) => req.config.distro.release ?? 'v3.20';
const arch = (req: StageRequest) => req.config.distro.arch ?? 'x86_64';
const mirrorOf = (req: StageRequest) => req.config.distro.mirror ?? `https://dl-cdn.alpinelinux.org/alpine/${release(req)}`;
const MIRROR_IN_CHROOT = '/mnt/ramboot-mirror';
const APK_CACHE = '/var/cache/apk';
const RESOLV_CONF = 'etc/resolv.conf';
const STEP = 'install Alpine packages';
const OFFLINE_FIX = 'set distro.mirror in ramboot.yaml to a local mirror directory (and distro.minirootfs.url to a local copy of the tarball)';

function minirootfs(req: StageRequest): { url: string; sha512: string } {
  const pinned = req.config.distro.minirootfs ?? KNOWN_MINIROOTFS[`${release(req)}/${arch(req)}`];
  if (!pinned) {
    throw new BuildError(
      `failed to find the Alpine minirootfs for ${release(req)}/${arch(req)}: set distro.minirootfs.url and .sha512 in ramboot.yaml`,
      { step: 'bootstrap alpine', input: 'ramboot.yaml' },
    );
  }
  return pinned;
}

const isLocal = (mirror: string) => !/^[a-z]+:\/\//.test(mirror);

/** A public key apk trusts: its file name is the key's name, which a signed index names. */
interface ApkKey {
  name: string;
  pem: Buffer;
}

/** The keys distro.keys lists, read from the commit and checked to be PEM public keys. */
async function trustedKeys(req: StageRequest): Promise<ApkKey[]> {
  const keys: ApkKey[] = [];
  for (const [i, path] of req.config.distro.keys.entries()) {
    const where = `ramboot.yaml distro.keys.${i} (${path})`;
    const pem = await req.readFile(path);
    if (!pem) throw new UsageError(`failed to read ${where}: no such file in the repository; commit the public key there`, { step: 'read distro.keys', input: path });
    try {
      createPublicKey(pem);
    } catch (err) {
      throw new UsageError(
        `failed to read ${where}: not a PEM public key (${describe(err)}); apk needs the .rsa.pub file abuild-keygen writes`,
        { step: 'read distro.keys', input: path },
      );
    }
    keys.push({ name: basename(path), pem });
  }
  return keys;
}

export const alpine: DistroBackend = {
  name: 'alpine',
  source: import.meta.url,

  async keyInputs(req) {
    const mirror = mirrorOf(req);
    // A local mirror changes without its path changing: its index is part of the key.
    const index = isLocal(mirror) ? join(localMirrorDir(req.repoDir, mirror), arch(req), 'APKINDEX.tar.gz') : undefined;
    const keys = await trustedKeys(req);
    return {
      release: release(req),
      arch: arch(req),
      mirror,
      minirootfs: minirootfs(req).sha512,
      untrusted: req.config.distro.allow_untrusted,
      index: index && existsSync(index) ? sha256(readFileSync(index)) : undefined,
      keys: keys.map((k) => ({ name: k.name, sha256: sha256(k.pem) })),
    };
  },

  async create(req, root, work) {
    const tarball = await fetchVerified(minirootfs(req), req);
    await runStep(work, 'tar', ['--numeric-owner', '-xzpf', tarball, '-C', root], { step: 'unpack the Alpine minirootfs' });
    const mirror = mirrorOf(req);
    // The minirootfs and its apk come from the commit: apk runs in the build's sandbox,
    // seeing the mirror (read-only) and its download cache, and the network only for a
    // mirror it downloads from.
    const binds: Bind[] = [{ source: req.cacheDir, target: APK_CACHE }];
    let repositories: string;
    if (isLocal(mirror)) {
      binds.push({ source: localMirrorDir(req.repoDir, mirror), target: MIRROR_IN_CHROOT, readOnly: true });
      repositories = `${MIRROR_IN_CHROOT}\n`;
    } else {
      repositories = `${mirror}/main\n${mirror}/community\n`;
      // For apk's downloads only: the build host's DNS settings are no part of the image.
      writeImageFile(root, RESOLV_CONF, readFileSync('/etc/resolv.conf'), 0o644);
    }
    writeImageFile(root, 'etc/apk/repositories', repositories, 0o644);
    for (const key of await trustedKeys(req)) writeImageFile(root, `etc/apk/keys/${key.name}`, key.pem, 0o644);
    // The kernel package would otherwise build its own initramfs: ramboot makes the image.
    writeImageFile(root, 'etc/mkinitfs/mkinitfs.conf', 'disable_trigger=yes\n', 0o644);
    const apkArgs = ['add', '--no-progress', '--update-cache', '--cache-dir', APK_CACHE];
    if (req.config.distro.allow_untrusted) apkArgs.push('--allow-untrusted');
    try {
      await runSandboxed(work, { root, binds, network: !isLocal(mirror) }, ['/sbin/apk', ...apkArgs, ...req.packages], { step: `${STEP} (${req.packages.join(' ')})` });
    } catch (err) {
      if (err instanceof CommandError) throw apkError(err, isLocal(mirror) ? req.resolvePath(mirror) : mirror);
      throw err;
    } finally {
      rmSync(imagePath(root, RESOLV_CONF), { force: true });
    }
  },

  async installed(root) {
    const db = readFileSync(join(root, 'lib/apk/db/installed'), 'utf8');
    const out: InstalledPackage[] = [];
    for (const block of db.split('\n\n')) {
      const name = /^P:(.*)$/m.exec(block)?.[1];
      const version = /^V:(.*)$/m.exec(block)?.[1];
      if (name) out.push({ name, version: version ?? '' });
    }
    return out.sort((a, b) => compareUtf8(a.name, b.name));
  },
};

/**
 * apk's own words for why a repository could not be used (apk-tools 2.x: database.c
 * warns "<action> <url>: <reason>", the reason from apk_error_str()), in ours: whether
 * the network is to blame (retry later) or the address or the keys (a person must act).
 */
const APK_REASONS: Record<string, { cause: string; transient: boolean }> = {
  'DNS lookup error': { cause: 'the name does not resolve (DNS)', transient: true },
  'temporary error (try again later)': { cause: 'a temporary failure: the name does not resolve right now, or the server is busy (HTTP 503)', transient: true },
  'could not connect to server (check repositories file)': { cause: 'the connection was refused (nothing listens there)', transient: true },
  'network error (check Internet connection and firewall)': { cause: 'no route to the network', transient: true },
  'operation timed out': { cause: 'the connection timed out', transient: true },
  'network connection aborted': { cause: 'the connection broke', transient: true },
  "remote server returned error (try 'apk update')": { cause: 'the server answered with an error (HTTP 5xx)', transient: true },
  'No such file or directory': { cause: 'there is no such file there (HTTP 404)', transient: false },
  'Permission denied': { cause: 'the server refused access (HTTP 401 or 403)', transient: false },
  'Protocol error': { cause: 'the server did not understand the request (HTTP 400)', transient: false },
};

/** "WARNING: updating and opening http://…/main: DNS lookup error". */
const REPOSITORY_WARNING = /^WARNING: (?:updating and opening|opening from cache|updating|opening|fetching) (\S+): (.+)$/m;
/** "ERROR: hello-1.0-r0: network error (…)": a package whose file could not be fetched. */
const PACKAGE_ERROR = /^ERROR: ([^\s:]+): (.+)$/m;
const SIGNATURE = /^(UNTRUSTED|BAD) signature$/;

/**
 * The cause of a failed `apk add`, when it is a repository's or the network's; otherwise
 * apk's own message. `mirror` is distro.mirror (a local one as the host sees it).
 */
function apkError(err: CommandError, mirror: string): Error {
  const output = err.output ?? '';
  const repo = REPOSITORY_WARNING.exec(output);
  if (repo) {
    // apk names a local mirror by where it is mounted in the chroot.
    const url = repo[1]!.startsWith(MIRROR_IN_CHROOT) ? mirror + repo[1]!.slice(MIRROR_IN_CHROOT.length) : repo[1]!;
    const reason = repo[2]!.trim();
    if (SIGNATURE.test(reason)) return signatureError(url, reason, err);
    const known = APK_REASONS[reason];
    if (known) return netError('fetch the package index of', { url, ...known }, fixFor(known), STEP);
  }
  const pkg = PACKAGE_ERROR.exec(output);
  const known = pkg && APK_REASONS[pkg[2]!.trim()];
  if (pkg && known) return netError(`download package ${pkg[1]} from`, { url: mirror, ...known }, fixFor(known), STEP);
  return err;
}

function fixFor(fault: Pick<NetFault, 'transient'>): string {
  return fault.transient ? OFFLINE_FIX : 'check distro.mirror and distro.release in ramboot.yaml';
}

function signatureError(url: string, reason: string, err: CommandError): UsageError {
  const why = reason.startsWith('UNTRUSTED')
    ? 'its index is signed by a key this build does not trust'
    : 'its index has a signature that does not match its content (a damaged or altered index, or a key file that is not the one it was signed with)';
  return new UsageError(
    `failed to ${STEP} from ${url}: ${why} (apk: ${reason}); ` +
      'commit the repository\'s public key (the .rsa.pub file its index names) and list it under distro.keys in ramboot.yaml',
    { step: STEP, input: url, output: err.output },
  );
}

/** A local path or an http(s) URL, checked against its sha512 before use. */
async function fetchVerified(src: { url: string; sha512: string }, req: StageRequest): Promise<string> {
  const cached = join(req.cacheDir, `minirootfs-${src.sha512.slice(0, 32)}.tar.gz`);
  if (existsSync(cached) && (await sha512File(cached)) === src.sha512) return cached;
  if (isLocal(src.url)) {
    copyFileSync(req.resolvePath(src.url), `${cached}.tmp`);
  } else {
    writeFileSync(`${cached}.tmp`, await download(src.url));
  }
  const got = await sha512File(`${cached}.tmp`);
  if (got !== src.sha512) {
    throw new BuildError(`failed to verify ${src.url}: sha512 is ${got}, ramboot.yaml pins ${src.sha512}`, {
      step: 'bootstrap alpine',
      input: src.url,
    });
  }
  renameSync(`${cached}.tmp`, cached);
  return cached;
}

async function download(url: string): Promise<Buffer> {
  const action = 'download the Alpine minirootfs from';
  const fix = (f: NetFault) => (f.transient ? OFFLINE_FIX : 'check distro.release and distro.arch, or set distro.minirootfs.url (and .sha512) in ramboot.yaml');
  let fault: NetFault;
  try {
    const res = await fetch(url);
    if (res.ok) return Buffer.from(await res.arrayBuffer());
    fault = faultOfStatus(url, res.status, res.statusText);
  } catch (err) {
    fault = faultOfError(url, err);
  }
  throw netError(action, fault, fix(fault), 'bootstrap alpine');
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function sha512File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha512');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
