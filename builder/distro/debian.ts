import { run } from '../../lib/run.js';
import { runStep } from '../work.js';
import type { DistroBackend, InstalledPackage, StageRequest } from './backend.js';

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

export const debian: DistroBackend = {
  name: 'debian',

  async keyInputs(req) {
    return { release: release(req), arch: arch(req), mirror: req.config.distro.mirror ?? '', excludes: DPKG_EXCLUDES };
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
      release(req),
      root,
      ...(req.config.distro.mirror ? [req.config.distro.mirror] : []),
    ];
    await runStep(work, 'mmdebstrap', args, { step: `install Debian packages (${req.packages.join(' ')})` });
  },

  async installed(root) {
    const { stdout } = await run('dpkg-query', [`--admindir=${root}/var/lib/dpkg`, '-W', '-f', '${Package} ${Version}\n'], {
      step: 'list installed packages',
    });
    return parseLines(stdout);
  },
};

function parseLines(text: string): InstalledPackage[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, version] = l.split(' ');
      return { name: name!, version: version ?? '' };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}
