import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BuildError } from '../../lib/errors.js';
import { run } from '../../lib/run.js';
import { chrootMounts, withMounts, type Mount } from '../chroot.js';
import { runStep } from '../work.js';
import type { DistroBackend, InstalledPackage, StageRequest } from './backend.js';

// Alpine: the official minirootfs (pinned by checksum), then apk inside it.

/** Minirootfs releases ramboot knows the checksum of, as Alpine publishes them. */
const KNOWN_MINIROOTFS: Record<string, { url: string; sha512: string }> = {
  'v3.20/x86_64': {
    url: 'https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/x86_64/alpine-minirootfs-3.20.3-x86_64.tar.gz',
    sha512: '9d5405f61f8a6ebc02461ba75346fbf1a63a4eab8510a0158dd321cee0c4dafe28c2a3d2cb7c3d75e2a8130dae0c3c92382f5b6adeea309eafc97621c5bf6400',
  },
};

const release = (req: StageRequest) => req.config.distro.release ?? 'v3.20';
const arch = (req: StageRequest) => req.config.distro.arch ?? 'x86_64';
const MIRROR_IN_CHROOT = '/mnt/ramboot-mirror';

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

export const alpine: DistroBackend = {
  name: 'alpine',

  async keyInputs(req) {
    const mirror = req.config.distro.mirror ?? `https://dl-cdn.alpinelinux.org/alpine/${release(req)}`;
    // A local mirror changes without its path changing: its index is part of the key.
    const index = isLocal(mirror) ? join(req.resolvePath(mirror), arch(req), 'APKINDEX.tar.gz') : undefined;
    return {
      release: release(req),
      arch: arch(req),
      mirror,
      minirootfs: minirootfs(req).sha512,
      untrusted: req.config.distro.allow_untrusted,
      index: index && existsSync(index) ? sha256(readFileSync(index)) : undefined,
    };
  },

  async create(req, root, work) {
    const tarball = await fetchVerified(minirootfs(req), req);
    await run('tar', ['--numeric-owner', '-xzpf', tarball, '-C', root], { step: 'unpack the Alpine minirootfs' });
    const mirror = req.config.distro.mirror ?? `https://dl-cdn.alpinelinux.org/alpine/${release(req)}`;
    const mounts: Mount[] = [...chrootMounts(root)];
    let repositories: string;
    if (isLocal(mirror)) {
      mounts.push({ source: req.resolvePath(mirror), target: join(root, MIRROR_IN_CHROOT), options: 'bind,ro' });
      repositories = `${MIRROR_IN_CHROOT}\n`;
    } else {
      repositories = `${mirror}/main\n${mirror}/community\n`;
      copyFileSync('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
    }
    writeFileSync(join(root, 'etc/apk/repositories'), repositories);
    // The kernel package would otherwise build its own initramfs: ramboot makes the image.
    mkdirSync(join(root, 'etc/mkinitfs'), { recursive: true });
    writeFileSync(join(root, 'etc/mkinitfs/mkinitfs.conf'), 'disable_trigger=yes\n');
    mounts.push({ source: req.cacheDir, target: join(root, 'var/cache/apk'), options: 'bind' });
    const apkArgs = ['add', '--no-progress', '--update-cache', '--cache-dir', '/var/cache/apk'];
    if (req.config.distro.allow_untrusted) apkArgs.push('--allow-untrusted');
    await withMounts(mounts, work, () =>
      runStep(work, 'chroot', [root, '/sbin/apk', ...apkArgs, ...req.packages], { step: `install Alpine packages (${req.packages.join(' ')})` }),
    );
  },

  async installed(root) {
    const db = readFileSync(join(root, 'lib/apk/db/installed'), 'utf8');
    const out: InstalledPackage[] = [];
    for (const block of db.split('\n\n')) {
      const name = /^P:(.*)$/m.exec(block)?.[1];
      const version = /^V:(.*)$/m.exec(block)?.[1];
      if (name) out.push({ name, version: version ?? '' });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  },
};

/** A local path or an http(s) URL, checked against its sha512 before use. */
async function fetchVerified(src: { url: string; sha512: string }, req: StageRequest): Promise<string> {
  const cached = join(req.cacheDir, `minirootfs-${src.sha512.slice(0, 32)}.tar.gz`);
  if (existsSync(cached) && (await sha512File(cached)) === src.sha512) return cached;
  if (isLocal(src.url)) {
    copyFileSync(req.resolvePath(src.url), `${cached}.tmp`);
  } else {
    const res = await fetch(src.url);
    if (!res.ok) throw new BuildError(`failed to download ${src.url}: HTTP ${res.status}`, { step: 'bootstrap alpine', input: src.url });
    writeFileSync(`${cached}.tmp`, Buffer.from(await res.arrayBuffer()));
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
