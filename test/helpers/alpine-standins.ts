import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { MINIROOTFS, MINIROOTFS_SHA512, MIRROR_KEY, allowSharedMirrors, sharedMirror, type TestPackage } from './apk.js';
import { SHARED_STATE, tempDir } from './ramboot.js';

// Stand-ins for the Alpine mirror, which is not reachable here: the packages the Alpine
// template's `packages` names, built on this machine the first time (with what Debian's
// mirror serves: the kernel package and OpenSSH's release), then taken from the test
// state. openrc and OpenSSH are compiled from their release sources for musl (Debian's
// musl-gcc; the binaries run on the minirootfs's own musl); the kernel is Debian's, with
// the modules the virtual NAS's hardware needs; the services Alpine's packages add to
// openrc's own (mdev, hwdrivers, networking, sshd, busybox's daemons) are small scripts
// of ours in test/fixtures/alpine-standins. Everything else comes from the minirootfs.

const here = dirname(fileURLToPath(import.meta.url));
const FIXTURES = resolve(here, '../fixtures');
const SCRIPTS = join(FIXTURES, 'alpine-standins');
/** openrc's release, as `git archive` of its tag 0.54.2 makes it (Alpine 3.20 ships 0.54): no mirror here has it. */
const OPENRC = { file: join(FIXTURES, 'src/openrc-0.54.2.tar.xz'), dir: 'openrc-0.54.2' };
/** OpenSSH's release tarball, from Debian's mirror (Debian's orig tarball is upstream's). */
const OPENSSH = {
  url: 'http://deb.debian.org/debian/pool/main/o/openssh/openssh_9.2p1.orig.tar.gz',
  sha256: '3f66dbf1655fb45f50e1c56da62ab01218c228807b21338d634ebcdf9d71cf46',
  dir: 'openssh-9.2p1',
};
/** The virtual NAS's hardware (USB stick on xHCI, e1000, i6300esb, the power button's input device), the medium's file system, UEFI variables. */
const MODULES = ['xhci_pci', 'usb_storage', 'sd_mod', 'vfat', 'nls_cp437', 'nls_ascii', 'nls_iso8859_1', 'e1000', 'i6300esb', 'evdev', 'efivarfs'];
const RUNLEVELS = ['sysinit', 'boot', 'default', 'shutdown', 'nonetwork'].map((r) => `etc/runlevels/${r}`);

type Files = TestPackage['files'];

function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): string {
  // Compiling runs beside other tests (the unit files, a qemu): it yields to them.
  if (['make', 'ninja', 'meson', './configure'].includes(cmd)) [cmd, args] = ['nice', ['-n', '10', cmd, ...args]];
  try {
    return execFileSync(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 }).toString();
  } catch (err) {
    const e = err as { stderr?: Buffer; stdout?: Buffer };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`.split('\n').slice(-30).join('\n');
    throw new Error(`building the Alpine stand-ins: ${cmd} ${args.join(' ')} failed in ${opts.cwd ?? '.'}:\n${out}`);
  }
}

/** Every regular file under dir (symlinks and `skip`ped paths left out), as package files. */
function tree(dir: string, skip: (path: string) => boolean = () => false): Files {
  const files: Files = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const path = relative(dir, full);
      if (skip(path)) continue;
      const st = lstatSync(full);
      if (st.isDirectory()) walk(full);
      else if (st.isFile()) files[path] = { data: readFileSync(full), mode: st.mode & 0o7777 };
    }
  };
  walk(dir);
  return files;
}

/**
 * musl-gcc sees only musl's headers: openrc and OpenSSH also include the kernel's
 * (linux/, asm/), so a directory of links to Debian's linux-libc-dev is put in front.
 */
function muslEnv(work: string): Record<string, string> {
  const headers = join(work, 'kernel-headers');
  mkdirSync(headers, { recursive: true });
  // pkg-config would find the build host's glibc libraries (openrc asks it for pam whatever -Dpam says).
  const noPkgConfig = join(work, 'no-pkg-config');
  mkdirSync(noPkgConfig, { recursive: true });
  for (const [name, target] of [['linux', '/usr/include/linux'], ['asm-generic', '/usr/include/asm-generic'], ['asm', '/usr/include/x86_64-linux-gnu/asm']]) {
    if (!existsSync(target!)) throw new Error(`${target} is missing: the Alpine stand-ins need Debian's linux-libc-dev (scripts/setup.sh installs it)`);
    if (!existsSync(join(headers, name!))) symlinkSync(target!, join(headers, name!));
  }
  return { CC: 'musl-gcc', CFLAGS: `-O2 -isystem ${headers}`, PKG_CONFIG_LIBDIR: noPkgConfig, PKG_CONFIG_PATH: '' };
}

function buildOpenrc(work: string): Files {
  const sums = readFileSync(join(dirname(OPENRC.file), 'SHA256SUMS'), 'utf8');
  const sum = createHash('sha256').update(readFileSync(OPENRC.file)).digest('hex');
  if (!sums.includes(`${sum}  ${OPENRC.file.split('/').pop()}`)) throw new Error(`${OPENRC.file}: sha256 ${sum} is not the one test/fixtures/src/SHA256SUMS pins`);
  run('tar', ['-xJf', OPENRC.file, '-C', work]);
  const src = join(work, OPENRC.dir);
  const dest = join(work, 'openrc-dest');
  const env = muslEnv(work);
  run('meson', ['setup', 'build', '--prefix=/usr', '--sysconfdir=/etc', '--libexecdir=/lib', '--libdir=/lib', '-Drootprefix=/', '-Dos=Linux',
    '-Daudit=disabled', '-Dselinux=disabled', '-Dpam=false', '-Dcapabilities=disabled', '-Dpkgconfig=false', '-Dbash-completions=false', '-Dzsh-completions=false'], { cwd: src, env });
  run('ninja', ['-C', 'build'], { cwd: src });
  run('meson', ['install', '-C', 'build', '--no-rebuild', '--strip', '--destdir', dest], { cwd: src });
  // As Alpine's package: no runlevel filled in (setup.sh chooses), no headers or manuals.
  return tree(dest, (p) => p.startsWith('etc/runlevels/') || p.startsWith('usr/share/man') || p.startsWith('usr/include'));
}

async function opensshSource(): Promise<string> {
  const file = join(SHARED_STATE, 'sources', `${OPENSSH.dir}.tar.gz`);
  if (existsSync(file)) return file;
  const res = await fetch(OPENSSH.url);
  if (!res.ok) throw new Error(`downloading ${OPENSSH.url}: HTTP ${res.status}`);
  const data = Buffer.from(await res.arrayBuffer());
  const sum = createHash('sha256').update(data).digest('hex');
  if (sum !== OPENSSH.sha256) throw new Error(`${OPENSSH.url}: sha256 ${sum}, expected ${OPENSSH.sha256}`);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp-${process.pid}`, data);
  renameSync(`${file}.tmp-${process.pid}`, file);
  return file;
}

function buildOpenssh(work: string, source: string): Files {
  run('tar', ['-xzf', source, '-C', work]);
  const src = join(work, OPENSSH.dir);
  const dest = join(work, 'openssh-dest');
  // Debian's musl leaves crypt() out; sshd calls it only for password logins, which the
  // template turns off (PasswordAuthentication no). On the machine, Alpine's musl has it.
  writeFileSync(join(work, 'crypt.c'), '#include <stddef.h>\nchar *crypt(const char *key, const char *salt) { (void)key; (void)salt; return NULL; }\n');
  const env = muslEnv(work);
  run('musl-gcc', ['-O2', '-c', join(work, 'crypt.c'), '-o', join(work, 'crypt.o')]);
  run('./configure', ['--prefix=/usr', '--sysconfdir=/etc/ssh', '--libexecdir=/usr/lib/ssh', '--with-privsep-path=/var/empty', '--with-pid-dir=/run',
    '--without-openssl', '--without-zlib', '--without-pam'], { cwd: src, env: { ...env, LIBS: join(work, 'crypt.o') } });
  run('make', ['-j2'], { cwd: src });
  run('make', ['install-nokeys', `DESTDIR=${dest}`], { cwd: src });
  run('sh', ['-c', `find '${dest}/usr' -type f -perm /111 -exec strip {} +`]);
  return tree(dest, (p) => p.startsWith('usr/share/man'));
}

/** An apt command; when it fails, once more after `apt-get update` (package lists missing, or older than the mirror). */
function apt(cmd: string, args: string[], cwd?: string): string {
  try {
    return run(cmd, args, { cwd });
  } catch {
    run('apt-get', ['update', '-qq']);
    return run(cmd, args, { cwd });
  }
}

/** Debian's current amd64 kernel package, by name and version: what `apt-get download` fetches (apt checks it against the signed index). */
function kernelPackage(): { name: string; version: string } {
  const deps = apt('apt-cache', ['depends', 'linux-image-amd64']);
  const name = /Depends: (linux-image-\S+-amd64)/.exec(deps)?.[1];
  if (!name) throw new Error(`apt-cache depends linux-image-amd64 named no kernel package (run apt-get update):\n${deps}`);
  const version = /^Version: (\S+)/m.exec(apt('apt-cache', ['show', '--no-all-versions', name]))?.[1];
  if (!version) throw new Error(`apt-cache show ${name} gave no version (run apt-get update)`);
  return { name, version };
}

/** The kernel as /boot/vmlinuz-lts (the template's boot.kernel) and the modules MODULES need, with their dependencies. */
function buildKernel(work: string, pkg: string): Files {
  const dl = join(work, 'kernel-deb');
  mkdirSync(dl);
  apt('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', pkg], dl);
  const debName = readdirSync(dl).find((n) => n.endsWith('.deb'));
  if (!debName) throw new Error(`apt-get download ${pkg} left no .deb in ${dl}`);
  const deb = join(dl, debName);
  const full = join(work, 'kernel-full');
  mkdirSync(full);
  run('sh', ['-c', `dpkg-deb --fsys-tarfile '${deb}' | tar -x -C '${full}' ./boot ./lib/modules`]);
  const version = readdirSync(join(full, 'lib/modules'))[0];
  if (!version || !existsSync(join(full, 'boot', `vmlinuz-${version}`))) throw new Error(`${deb} holds no kernel and modules of one version`);
  run('depmod', ['-b', full, version]);
  const dep = new Map<string, string[]>();
  for (const line of readFileSync(join(full, 'lib/modules', version, 'modules.dep'), 'utf8').split('\n')) {
    const [mod, deps] = line.split(':');
    if (mod) dep.set(mod, (deps ?? '').trim().split(/\s+/).filter(Boolean));
  }
  const byName = new Map([...dep.keys()].map((m) => [m.split('/').pop()!.replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_'), m]));
  const wanted = new Set<string>();
  const add = (m: string) => {
    if (wanted.has(m)) return;
    wanted.add(m);
    for (const d of dep.get(m) ?? []) add(d);
  };
  for (const name of MODULES) {
    const m = byName.get(name);
    if (!m) throw new Error(`the kernel ${version} has no module ${name}`);
    add(m);
  }
  const root = join(work, 'kernel-pkg');
  const modules = join(root, 'lib/modules', version);
  for (const m of wanted) {
    mkdirSync(dirname(join(modules, m)), { recursive: true });
    copyFileSync(join(full, 'lib/modules', version, m), join(modules, m));
  }
  for (const f of ['modules.builtin', 'modules.order', 'modules.builtin.modinfo']) {
    if (existsSync(join(full, 'lib/modules', version, f))) copyFileSync(join(full, 'lib/modules', version, f), join(modules, f));
  }
  run('depmod', ['-b', root, version]);
  mkdirSync(join(root, 'boot'));
  copyFileSync(join(full, 'boot', `vmlinuz-${version}`), join(root, 'boot/vmlinuz-lts'));
  return tree(root);
}

const scripts = (pkg: string): Files => tree(join(SCRIPTS, pkg));
const note = (name: string, text: string): Files => ({ [`usr/share/doc/${name}/README`]: `${text}\n` });

/**
 * The stand-in mirror, made once per set of inputs (this module, the scripts, the
 * sources, Debian's current kernel) in the shared test state: a few minutes on the first
 * call, while it compiles openrc and OpenSSH.
 */
export async function standInMirror(): Promise<string> {
  const kernel = kernelPackage();
  // apk.ts writes the packages: its own key covers its code.
  const key = createHash('sha256').update(readFileSync(fileURLToPath(import.meta.url))).update(MIRROR_KEY);
  for (const [path, spec] of Object.entries(scripts('.'))) key.update(`${path}\0${typeof spec === 'string' ? 0o644 : spec.mode}\0`).update(typeof spec === 'string' ? spec : spec.data);
  key.update(readFileSync(OPENRC.file)).update(OPENSSH.sha256).update(`${kernel.name} ${kernel.version}`);
  const name = `test-alpine-standins-${key.digest('hex').slice(0, 16)}`;
  allowSharedMirrors();
  if (existsSync(join(SHARED_STATE, name, 'x86_64', 'APKINDEX.tar.gz'))) return join(SHARED_STATE, name);
  const source = await opensshSource();
  const work = tempDir('alpine-standins');
  try {
    return sharedMirror(name, () => [
      { name: 'openrc', version: '0.54.2-r0', files: { ...buildOpenrc(work), ...scripts('openrc') }, dirs: RUNLEVELS },
      { name: 'busybox-openrc', version: '1.36.1-r0', depends: ['openrc'], files: scripts('busybox-openrc') },
      { name: 'mdev-conf', version: '4.7-r0', files: scripts('mdev-conf') },
      { name: 'alpine-base', version: '3.20.3-r0', depends: ['openrc', 'busybox-openrc', 'mdev-conf'], files: note('alpine-base', 'a stand-in for Alpine\'s alpine-base: openrc, busybox\'s services, mdev\'s rules') },
      { name: 'openssh', version: '9.2_p1-r0', depends: ['openrc'], files: { ...buildOpenssh(work, source), ...scripts('openssh') }, dirs: ['var/empty'] },
      { name: 'agetty', version: '2.40.1-r0', files: scripts('agetty') },
      { name: 'agetty-openrc', version: '2.40.1-r0', depends: ['agetty', 'openrc'], files: note('agetty-openrc', 'openrc\'s own agetty service serves it') },
      { name: 'linux-lts', version: '6.1.0-r0', files: buildKernel(work, kernel.name) },
      { name: 'linux-firmware-none', version: '20240513-r0', files: note('linux-firmware-none', 'no firmware: the virtual NAS needs none') },
    ]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Points a repository from `ramboot init --distro alpine` at the stand-ins: the local
 * mirror (unsigned, allow_untrusted) and the minirootfs fixture instead of Alpine's
 * servers; the kernel's messages on the serial console (the test reads the boots there). `packages` loses what has no
 * stand-in and nothing here needs: syslinux (these machines boot UEFI, with systemd-boot
 * from the build host), ca-certificates and tzdata.
 */
export function useStandIns(repo: string, mirror: string): void {
  const path = join(repo, 'ramboot.yaml');
  const config = parse(readFileSync(path, 'utf8'));
  config.distro = { ...config.distro, mirror, allow_untrusted: true, minirootfs: { url: MINIROOTFS, sha512: MINIROOTFS_SHA512 } };
  config.boot.append = ['console=ttyS0', ...String(config.boot.append ?? '').split(' ').filter((a) => a && a !== 'quiet')].join(' ');
  writeFileSync(path, stringify(config));
  const packages = join(repo, 'packages');
  writeFileSync(packages, readFileSync(packages, 'utf8').split('\n').filter((l) => !['syslinux', 'ca-certificates', 'tzdata'].includes(l.trim())).join('\n'));
}
