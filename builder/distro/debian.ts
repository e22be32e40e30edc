import { CommandError, UsageError } from '../../lib/errors.js';
import { describeStatus, isTransientStatus, netError, type NetFault } from '../../lib/net.js';
import { run } from '../../lib/run.js';
import { compareUtf8 } from '../tree.js';
import { runStep } from '../work.js';
import type { DistroBackend, InstalledPackage, StageRequest } from './backend.js';
import { localMirrorDir } from './local-mirror.js';

// Debian via mmdebstrap: minbase plus the listed packages. Without a configured mirror
// mmdebstrap uses its default, which is what the host's apt can reach.

/**
 * Documentation, man pages and translations nobody reads on the machine stay out of the
 * image (dpkg never unpacks them): every byte of it lives in RAM. Copyright files stay.
 */
export const DPKG_EXCLUDES = [
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
  'path-exclude=/usr/share/lintian/*',
];

const release = (req: StageRequest) => req.config.distro.release ?? 'bookworm';
const arch = (req: StageRequest) => req.config.distro.arch ?? 'amd64';

/**
 * distro.mirror as mmdebstrap gets it: a URL. mmdebstrap would read a path as a
 * sources.list file (any file of the host); a file:// mirror is a local one, allowed
 * where an Alpine local mirror is.
 */
function mirrorOf(req: StageRequest): string | undefined {
  const mirror = req.config.distro.mirror;
  if (mirror === undefined || /^https?:\/\//.test(mirror)) return mirror;
  if (mirror.startsWith('file://')) {
    localMirrorDir(req.repoDir, mirror.slice('file://'.length));
    return mirror;
  }
  throw new UsageError(`failed to use distro.mirror ${mirror} (ramboot.yaml): a Debian mirror is a URL; write http(s)://… or file:///path for a local one`, {
    step: 'check distro.mirror',
    input: mirror,
  });
}

export const debian: DistroBackend = {
  name: 'debian',
  source: import.meta.url,

  async keyInputs(req) {
    return { release: release(req), arch: arch(req), mirror: mirrorOf(req) ?? '', excludes: DPKG_EXCLUDES };
  },

  async create(req, root, work) {
    const args = [
      '--variant=minbase',
      `--architectures=${arch(req)}`,
      `--include=${req.packages.join(',')}`,
      ...DPKG_EXCLUDES.map((e) => `--dpkgopt=${e}`),
      // Package scripts generate SSH host keys; the image's key comes only from secrets.
      '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
      // The download cache recipe from mmdebstrap(1): unchanged packages are not fetched again.
      '--skip=essential/unlink',
      '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
      `--setup-hook=sync-in ${req.cacheDir} /var/cache/apt/archives/`,
      `--customize-hook=sync-out /var/cache/apt/archives ${req.cacheDir}`,
      // mmdebstrap reads options anywhere on its line: after "--" the commit's strings
      // are the suite and the mirror whatever they say (ramboot.yaml validated them too).
      '--',
      release(req),
      root,
      ...(mirrorOf(req) ?? []),
    ];
    try {
      await runStep(work, 'mmdebstrap', args, { step: `install Debian packages (${req.packages.join(' ')})` });
    } catch (err) {
      const fault = err instanceof CommandError ? aptFault(err.output ?? '') : undefined;
      if (!fault) throw err;
      const fix = fault.transient
        ? 'set distro.mirror in ramboot.yaml to a mirror this host reaches (a local one works: file:///path)'
        : 'check distro.mirror and distro.release in ramboot.yaml';
      throw netError('download Debian packages from', fault, fix, 'install Debian packages');
    }
  },

  async installed(root) {
    const { stdout } = await run('dpkg-query', [`--admindir=${root}/var/lib/dpkg`, '-W', '-f', '${Package} ${Version}\n'], {
      step: 'list installed packages',
    });
    return parseLines(stdout);
  },
};

/** apt's "E: Failed to fetch <url>  <reason>", the first of them: the fault behind the others. */
const FAILED_FETCH = /^E: Failed to fetch (\S+)\s+(.+)$/m;

/** apt's reasons (methods/http, methods/connect) in ramboot's words, and whether to retry. */
const APT_REASONS: { match: RegExp; cause: string; transient: boolean }[] = [
  { match: /Temporary failure resolving|Could not resolve/, cause: 'the name does not resolve (DNS)', transient: true },
  { match: /Connection refused/, cause: 'the connection was refused (nothing listens there)', transient: true },
  { match: /No route to host|Network is unreachable/, cause: 'no route to the host', transient: true },
  { match: /timed out|Connection failed/, cause: 'the connection timed out', transient: true },
  { match: /Could not connect|Unable to connect/, cause: 'the connection failed', transient: true },
  { match: /Certificate verification failed|certificate|GnuTLS|SSL/i, cause: 'TLS failed', transient: true },
];

/** The network fault in mmdebstrap's output, if that is why it failed. */
export function aptFault(output: string): NetFault | undefined {
  const m = FAILED_FETCH.exec(output);
  if (!m) return undefined;
  const [, url, reason] = m as unknown as [string, string, string];
  const status = /^(\d{3})\s+(.*?)(?:\s+\[IP: [^\]]*\])?\s*$/.exec(reason);
  if (status) return { url, cause: describeStatus(Number(status[1]), status[2]), transient: isTransientStatus(Number(status[1])) };
  const known = APT_REASONS.find((r) => r.match.test(reason));
  return known ? { url, cause: `${known.cause} (apt: ${reason.trim()})`, transient: known.transient } : undefined;
}

function parseLines(text: string): InstalledPackage[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, version] = l.split(' ');
      return { name: name!, version: version ?? '' };
    })
    .sort((a, b) => compareUtf8(a.name, b.name));
}
