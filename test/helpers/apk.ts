import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, statSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { parse, stringify } from 'yaml';
import { SHARED_STATE, ramboot, tempDir } from './ramboot.js';

// A local APK repository of small packages the tests make themselves, in apk-tools 2.x
// format as abuild writes it: a package is concatenated gzip streams, the control tar
// (.PKGINFO, its end-of-archive blocks cut) then the data tar; .PKGINFO's datahash is the
// sha256 of the data stream. The index is made by the minirootfs's own `apk index`.

const here = dirname(fileURLToPath(import.meta.url));
/**
 * The Alpine minirootfs fixture, in the repository (test/fixtures/alpine: the official
 * tarball and Alpine's SHA512SUMS; builds verify it by that sum), unless $RAMBOOT_FIXTURES
 * names another directory.
 */
export const FIXTURES = process.env.RAMBOOT_FIXTURES || resolve(here, '../fixtures/alpine');
/** A fixture file; a missing one says what is missing and where it is looked for, rather than a bare ENOENT. */
function fixture(name: string): string {
  const path = join(FIXTURES, name);
  if (!existsSync(path)) {
    throw new Error(
      `the test fixture ${path} is missing: the Alpine tests need test/fixtures/alpine of the repository, ` +
        `or RAMBOOT_FIXTURES=DIR naming a directory with alpine-minirootfs-3.20.3-x86_64.tar.gz and its SHA512SUMS`,
    );
  }
  return path;
}
export const MINIROOTFS = fixture('alpine-minirootfs-3.20.3-x86_64.tar.gz');
export const MINIROOTFS_SHA512 = readFileSync(fixture('SHA512SUMS'), 'utf8')
  .split('\n')
  .find((l) => l.includes('alpine-minirootfs-3.20.3-x86_64.tar.gz'))!
  .split(/\s+/)[0]!;

export interface TestPackage {
  name: string;
  version: string;
  description?: string;
  depends?: string[];
  /** Image paths (no leading slash) → content; mode 0644 unless given. */
  files: Record<string, string | { data: string | Buffer; mode: number }>;
  /** Directories the package holds even when empty (openrc's runlevels). */
  dirs?: string[];
}

/** Fixed mtime for everything in a package, so a package's bytes depend only on its content. */
const EPOCH = 1_700_000_000;

function sh(cmd: string, args: string[], cwd?: string): Buffer {
  return execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** One ustar header block. */
function tarHeader(name: string, opts: { mode: number; size: number; type: string }): Buffer {
  if (Buffer.byteLength(name) > 99) throw new Error(`${name}: longer than a ustar name field holds`);
  const h = Buffer.alloc(512);
  const put = (off: number, len: number, text: string) => h.write(text, off, len, 'utf8');
  const oct = (off: number, len: number, n: number) => put(off, len, `${n.toString(8).padStart(len - 1, '0')}\0`);
  put(0, 100, name);
  oct(100, 8, opts.mode);
  oct(108, 8, 0);
  oct(116, 8, 0);
  oct(124, 12, opts.size);
  oct(136, 12, EPOCH);
  put(148, 8, '        ');
  put(156, 1, opts.type);
  put(257, 6, 'ustar\0');
  put(263, 2, '00');
  put(265, 32, 'root');
  put(297, 32, 'root');
  let sum = 0;
  for (const b of h) sum += b;
  put(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

const pad = (data: Buffer) => Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);

/**
 * The data tar as abuild-tar --hash writes it: directories as entries of their own and,
 * before every file, a pax header with its APK-TOOLS.checksum.SHA1 (apk 2 counts a
 * package without them as an error).
 */
function dataTar(dir: string, paths: string[], emptyDirs: string[] = []): Buffer {
  const dirs = new Set<string>();
  for (const d of emptyDirs) {
    const parts = d.split('/');
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const out: Buffer[] = [];
  for (const d of [...dirs].sort()) out.push(tarHeader(`${d}/`, { mode: 0o755, size: 0, type: '5' }));
  for (const p of [...paths].sort()) {
    const data = readFileSync(join(dir, p));
    const record = (body: string) => {
      // A pax record's length counts its own digits.
      let len = body.length + 3;
      while (`${len} ${body}\n`.length !== len) len = `${len} ${body}\n`.length;
      return `${len} ${body}\n`;
    };
    const pax = Buffer.from(record(`APK-TOOLS.checksum.SHA1=${createHash('sha1').update(data).digest('hex')}`));
    out.push(tarHeader(`PaxHeaders/${p.split('/').pop()}`.slice(0, 99), { mode: 0o644, size: pax.length, type: 'x' }), pad(pax));
    out.push(tarHeader(p, { mode: statSync(join(dir, p)).mode & 0o7777, size: data.length, type: '0' }), pad(data));
  }
  return Buffer.concat([...out, Buffer.alloc(1024)]);
}

function gzip(data: Buffer): Buffer {
  // No name and no mtime in the header (node writes neither): the bytes are reproducible.
  return gzipSync(data, { level: 9 });
}

export function makeApk(pkg: TestPackage, outDir: string): string {
  const work = tempDir('apk');
  try {
    const data = join(work, 'data');
    mkdirSync(data);
    for (const [path, spec] of Object.entries(pkg.files)) {
      const { data: text, mode } = typeof spec === 'string' ? { data: spec, mode: 0o644 } : spec;
      const dest = join(data, path);
      mkdirSync(dirname(dest), { recursive: true });
      writeFileSync(dest, text);
      chmodSync(dest, mode);
    }
    const dataGz = gzip(dataTar(data, Object.keys(pkg.files), pkg.dirs));
    const size = Object.values(pkg.files).reduce((n, s) => n + Buffer.byteLength(typeof s === 'string' ? s : s.data), 0);
    const info = [
      '# Generated by ramboot tests',
      `pkgname = ${pkg.name}`,
      `pkgver = ${pkg.version}`,
      `pkgdesc = ${pkg.description ?? `${pkg.name}, a test package`}`,
      'url = https://example.org/',
      `builddate = ${EPOCH}`,
      'packager = ramboot tests',
      `size = ${size}`,
      'arch = x86_64',
      'origin = ' + pkg.name,
      'license = MIT',
      ...(pkg.depends ?? []).map((d) => `depend = ${d}`),
      `datahash = ${createHash('sha256').update(dataGz).digest('hex')}`,
      '',
    ].join('\n');
    // No end-of-archive blocks after the control tar (abuild-tar --cut): the data tar follows it.
    const pkginfo = Buffer.from(info);
    const controlTar = gzip(Buffer.concat([tarHeader('.PKGINFO', { mode: 0o644, size: pkginfo.length, type: '0' }), pad(pkginfo)]));
    const file = join(outDir, `${pkg.name}-${pkg.version}.apk`);
    writeFileSync(file, Buffer.concat([controlTar, dataGz]));
    return file;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Indexes the .apk files in dir with the minirootfs's apk, run in a chroot. */
export function indexRepo(dir: string, apks: string[]): void {
  const rootfs = tempDir('apk-index');
  try {
    sh('tar', ['--numeric-owner', '-xzpf', MINIROOTFS, '-C', rootfs]);
    const inside = join(rootfs, 'tmp/repo');
    mkdirSync(inside, { recursive: true });
    const names = apks.map((a) => a.split('/').pop()!);
    for (const a of apks) copyFileSync(a, join(inside, a.split('/').pop()!));
    sh('chroot', [rootfs, '/bin/sh', '-c', `cd /tmp/repo && /sbin/apk index --allow-untrusted --rewrite-arch x86_64 -d "ramboot test repository" -o APKINDEX.tar.gz ${names.join(' ')}`]);
    copyFileSync(join(inside, 'APKINDEX.tar.gz'), join(dir, 'APKINDEX.tar.gz'));
  } finally {
    rmSync(rootfs, { recursive: true, force: true });
  }
}

/** An RSA key pair as abuild-keygen makes one; `name` is the public key's file name, the key's name. */
export interface SigningKey {
  name: string;
  privateKey: string;
  publicKey: string;
}

/** A new 2048-bit RSA key pair in dir, made by openssl. */
export function makeSigningKey(dir: string, name: string): SigningKey {
  mkdirSync(dir, { recursive: true });
  const privateKey = join(dir, name.replace(/\.pub$/, ''));
  const publicKey = join(dir, name);
  sh('openssl', ['genrsa', '-out', privateKey, '2048']);
  sh('openssl', ['rsa', '-in', privateKey, '-pubout', '-out', publicKey]);
  return { name, privateKey, publicKey };
}

/**
 * Signs an index as abuild-sign does (RSA, the default type): `openssl dgst -sha1 -sign`
 * over the whole APKINDEX.tar.gz that `apk index` wrote, the signature as the one member
 * of a tar named .SIGN.RSA.<key name>, its end-of-archive blocks cut (abuild-tar --cut),
 * gzip'd on its own and put in front. apk-tools 2.x checks it in apk_sign_ctx_mpart_cb:
 * the compressed bytes of the gzip stream after the signature's, hashed with SHA-1,
 * against /etc/apk/keys/<key name>.
 */
export function signIndex(index: string, key: SigningKey): void {
  const signature = sh('openssl', ['dgst', '-sha1', '-sign', key.privateKey, index]);
  const member = Buffer.concat([tarHeader(`.SIGN.RSA.${key.name}`, { mode: 0o644, size: signature.length, type: '0' }), pad(signature)]);
  writeFileSync(index, Buffer.concat([gzip(member), readFileSync(index)]));
}

/**
 * An Alpine mirror laid out as dl-cdn.alpinelinux.org is, for `release`: main (both
 * test packages) and community (empty of anything the tests install), each index signed
 * with `key`, and the minirootfs under releases/.
 */
export function signedMirror(root: string, key: SigningKey, release = 'v3.20'): void {
  for (const [repo, pkgs] of [['main', [HELLO_PAGE, HELLO_EXTRA]], ['community', [HELLO_EXTRA]]] as const) {
    const arch = join(root, 'alpine', release, repo, 'x86_64');
    mkdirSync(arch, { recursive: true });
    indexRepo(arch, pkgs.map((p) => makeApk(p, arch)));
    signIndex(join(arch, 'APKINDEX.tar.gz'), key);
  }
  const releases = join(root, 'alpine', release, 'releases', 'x86_64');
  mkdirSync(releases, { recursive: true });
  copyFileSync(MINIROOTFS, join(releases, 'alpine-minirootfs-3.20.3-x86_64.tar.gz'));
}

/** The packages every Alpine test installs. */
export const HELLO_PAGE: TestPackage = {
  name: 'hello-page',
  version: '1.2.3-r0',
  description: 'a page the status service shows',
  files: {
    'var/www/hello.txt': 'hello from the hello-page package, version 1.2.3\n',
    'etc/monitor.d/hello': { data: '#!/bin/sh\n# Installed by hello-page.\ncat /var/www/hello.txt\ncat /var/www/setup.txt 2>/dev/null\n', mode: 0o755 },
  },
};

export const HELLO_EXTRA: TestPackage = {
  name: 'hello-extra',
  version: '0.1-r0',
  depends: ['hello-page'],
  files: { 'usr/share/hello-extra/README': 'an extra package depending on hello-page\n' },
};

/** The mirror is keyed by what makes it: this module's code and the packages it holds. */
export const MIRROR_KEY = createHash('sha256').update(readFileSync(fileURLToPath(import.meta.url))).update(JSON.stringify([HELLO_PAGE, HELLO_EXTRA])).digest('hex').slice(0, 16);

/**
 * The local mirror the Alpine tests share (<mirror>/x86_64/APKINDEX.tar.gz + packages).
 * It lives in the shared test state and is made once: its index is part of the package
 * stage's cache key, so a stable mirror lets every test file reuse one stage.
 */
export function localMirror(): string {
  return sharedMirror(`test-apk-mirror-${MIRROR_KEY}`, () => [HELLO_PAGE, HELLO_EXTRA]);
}

/** The operator's allowance for local mirrors in the shared test state (builder/distro/local-mirror.ts), for this process and every ramboot it starts. */
export function allowSharedMirrors(): void {
  if (!(process.env.RAMBOOT_MIRRORS ?? '').split(':').includes(SHARED_STATE)) {
    process.env.RAMBOOT_MIRRORS = [process.env.RAMBOOT_MIRRORS, SHARED_STATE].filter(Boolean).join(':');
  }
}

/**
 * A local mirror in the shared test state, named by what makes it and made once: the
 * packages `make` returns, indexed, published by a rename so a reader never sees half.
 * Another process that published it first wins; its mirror is never replaced under it.
 */
export function sharedMirror(name: string, make: () => TestPackage[]): string {
  allowSharedMirrors();
  const mirror = join(SHARED_STATE, name);
  if (existsSync(join(mirror, 'x86_64', 'APKINDEX.tar.gz'))) return mirror;
  const tmp = `${mirror}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const arch = join(tmp, 'x86_64');
  mkdirSync(arch, { recursive: true });
  try {
    indexRepo(arch, make().map((p) => makeApk(p, arch)));
    renameSync(tmp, mirror);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if ((code === 'EEXIST' || code === 'ENOTEMPTY') && existsSync(join(mirror, 'x86_64', 'APKINDEX.tar.gz'))) return mirror;
    throw err;
  }
  return mirror;
}

/** ramboot.yaml for an offline Alpine build from the fixtures' minirootfs and the local mirror. */
export function alpineConfig(mirror: string, extra = ''): string {
  return `host:
  name: alpine-test
distro:
  name: alpine
  release: v3.20
  mirror: ${mirror}
  allow_untrusted: true
  minirootfs:
    url: ${MINIROOTFS}
    sha512: ${MINIROOTFS_SHA512}
boot:
  kernel: vmlinuz-*
  append: console=ttyS0
secrets:
  recipients: []
${extra}`;
}

/** git in a test repository, with a fixed identity and dates so commits are reproducible. */
export function git(repo: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd: repo,
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: 'ramboot test',
      GIT_AUTHOR_EMAIL: 'test@example.org',
      GIT_COMMITTER_NAME: 'ramboot test',
      GIT_COMMITTER_EMAIL: 'test@example.org',
      GIT_AUTHOR_DATE: '2024-01-01T00:00:00Z',
      GIT_COMMITTER_DATE: '2024-01-01T00:00:00Z',
    },
    encoding: 'utf8',
  });
}

/** Writes files (path → content, or [content, mode]) into a repository working tree. */
export function writeFiles(repo: string, files: Record<string, string | [string | Buffer, number]>): void {
  for (const [path, spec] of Object.entries(files)) {
    const [data, mode] = typeof spec === 'string' ? [spec, 0o644] : spec;
    const dest = join(repo, path);
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, data);
    chmodSync(dest, mode);
  }
}

/** A new git repository with these files, committed. */
export function makeRepo(files: Record<string, string | [string | Buffer, number]>): string {
  const repo = join(tempDir('alpine-repo'), 'nas');
  mkdirSync(repo);
  git(repo, 'init', '-q', '-b', 'main');
  writeFiles(repo, files);
  commitAll(repo, 'initial');
  return repo;
}

export function commitAll(repo: string, message: string): string {
  git(repo, 'add', '-A');
  git(repo, 'commit', '-q', '-m', message);
  return git(repo, 'rev-parse', 'HEAD').trim();
}

/** The smallest Alpine repository that builds offline: the test package and a stand-in kernel in root/boot. */
export function minimalAlpineFiles(mirror: string): Record<string, string | [string | Buffer, number]> {
  return {
    'ramboot.yaml': alpineConfig(mirror),
    packages: '# offline: only packages from the local test mirror\nhello-page\n',
    'root/boot/vmlinuz-test': 'not a real kernel: the build only copies it\n',
    'root/etc/hostname': 'alpine-test\n',
    'setup.sh': ['#!/bin/sh\nset -e\necho "setup.sh ran in build $RAMBOOT_BUILD" > /var/www/setup.txt\n', 0o755],
  };
}

/**
 * The minimal Alpine repository (the local test mirror), with an age identity of its own
 * as the secrets' recipient and a committed SSH host key secret; `edit` changes its
 * ramboot.yaml first. `env` names the identity for the CLI.
 */
export async function keyedAlpineRepo(edit: (config: Record<string, any>) => void = () => {}): Promise<{ repo: string; env: Record<string, string> }> {
  const keys = tempDir('repo-keys');
  execFileSync('age-keygen', ['-o', join(keys, 'key.txt')], { stdio: 'ignore' });
  const recipient = /public key: (age1\S+)/.exec(readFileSync(join(keys, 'key.txt'), 'utf8'))![1]!;
  const env = { RAMBOOT_IDENTITY: join(keys, 'key.txt') };
  const files = minimalAlpineFiles(localMirror());
  const config = parse(String(files['ramboot.yaml']));
  config.secrets.recipients = [recipient];
  edit(config);
  files['ramboot.yaml'] = stringify(config);
  const repo = makeRepo(files);
  const key = await ramboot(['secrets', 'add', 'etc/ssh/ssh_host_ed25519_key', '--generate', 'ssh-ed25519', '--repo', repo], env);
  if (key.exitCode !== 0) throw new Error(`ramboot secrets add failed: ${key.stderr}`);
  commitAll(repo, 'the host key');
  return { repo, env };
}
