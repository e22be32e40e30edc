import { execa } from 'execa';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alpineConfig, commitAll, HELLO_PAGE, localMirror, makeRepo } from '../helpers/apk.js';
import { cloudKernelVersion } from '../helpers/kernel.js';
import { CLI, freePort, SHARED_STATE, tempDir, type Built } from '../helpers/ramboot.js';

// Alpine offline: the fixtures' minirootfs and a local apk repository of a package the
// test makes itself, built with no network at all, then booted under qemu with a Debian
// cloud kernel and its virtio modules carried in the repository's own root/.

const here = dirname(fileURLToPath(import.meta.url));
const KVER = cloudKernelVersion();
const MODULES = `/lib/modules/${KVER}`;
/** virtio_net and what it needs, in load order (the cloud kernel has them as modules). */
const NIC_MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
  'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
  'kernel/drivers/virtio/virtio_pci.ko',
  'kernel/net/core/failover.ko',
  'kernel/drivers/net/net_failover.ko',
  'kernel/drivers/net/virtio_net.ko',
];
const BOOT_DEADLINE_MS = 4 * 60_000;

/** The test machine: busybox init, the NIC driver loaded by hand, the status service from bins/. */
function machineFiles(mirror: string): Record<string, string | [string | Buffer, number]> {
  const files: Record<string, string | [string | Buffer, number]> = {
    'ramboot.yaml': alpineConfig(mirror),
    packages: '# from the local test mirror only\nhello-page\n',
    'root/init': ['#!/bin/sh\n# The kernel runs /init; busybox init reads /etc/inittab.\nexec /sbin/init\n', 0o755],
    'root/etc/inittab': [
      '::sysinit:/etc/rc.ramboot',
      '::respawn:/usr/local/bin/monitor -listen :80',
      '::ctrlaltdel:/sbin/reboot',
      '',
    ].join('\n'),
    'root/etc/rc.ramboot': [
      [
        '#!/bin/sh',
        'mount -t proc proc /proc',
        'mount -t sysfs sysfs /sys',
        'mount -t devtmpfs devtmpfs /dev',
        ...NIC_MODULES.map((m) => `insmod ${MODULES}/${m}`),
        'ip link set lo up',
        'ip link set eth0 up',
        'ip addr add 10.0.2.15/24 dev eth0',
        'ip route add default via 10.0.2.2',
        'echo "RAMBOOT-ALPINE-UP $(ip -o -4 addr show dev eth0)"',
        '',
      ].join('\n'),
      0o755,
    ],
    'root/etc/hostname': 'alpine-test\n',
    'root/etc/monitor.d/release': ['#!/bin/sh\ncat /etc/ramboot-release\n', 0o755],
    'setup.sh': ['#!/bin/sh\nset -e\necho "setup.sh ran in build $RAMBOOT_BUILD" > /var/www/setup.txt\n', 0o755],
    [`root/boot/vmlinuz-${KVER}`]: [readFileSync(`/boot/vmlinuz-${KVER}`), 0o644],
  };
  for (const m of NIC_MODULES) files[`root${MODULES}/${m}`] = [readFileSync(join(MODULES, m)), 0o644];
  // The status service, as the Debian example carries it.
  const bins = join(here, '../../examples/debian/bins');
  const walk = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]));
  for (const f of walk(bins)) files[`bins/${relative(bins, f)}`] = [readFileSync(f), 0o644];
  return files;
}

describe('an Alpine machine built offline from a local apk repository', () => {
  let repo: string;
  let work: string;
  let built: Built;
  let manifest: { packages: { name: string; version: string }[]; append: string; buildId: string };
  let qemu: ChildProcess | undefined;
  let httpPort: number;
  let serial: string;

  beforeAll(async () => {
    repo = makeRepo(machineFiles(localMirror()));
    work = tempDir('alpine');
    // No network at all: a new network namespace has only a loopback device, and it is down.
    const r = await execa(
      'unshare',
      ['--net', 'node', CLI, 'build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images'), '--json'],
      { reject: false, stdin: 'ignore' },
    );
    if (r.exitCode !== 0) throw new Error(`ramboot build failed (${r.exitCode}): ${String(r.stderr).slice(-3000)}`);
    built = JSON.parse(String(r.stdout)) as Built;
    manifest = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8'));

    // Boot as syslinux would: the kernel, and the segments one after the other as the initrd.
    const initrd = join(work, 'initrd.img');
    writeFileSync(initrd, Buffer.concat(['base', 'overlay', 'secrets'].map((s) => readFileSync(join(built.imageDir, `${s}.cpio.zst`)))));
    httpPort = await freePort();
    serial = join(work, 'serial.log');
    qemu = spawn(
      'qemu-system-x86_64',
      [
        '-accel', 'tcg', '-m', '384', '-smp', '1', '-display', 'none', '-no-reboot',
        '-serial', `file:${serial}`, '-monitor', 'none',
        '-kernel', join(built.imageDir, 'vmlinuz'), '-initrd', initrd,
        '-append', `${manifest.append} panic=-1 ramboot.build=${built.buildId}`,
        '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${httpPort}-:80`, '-device', 'virtio-net-pci,netdev=n0',
      ],
      { stdio: 'ignore' },
    );
  });

  afterAll(async () => {
    if (qemu && qemu.exitCode === null) {
      const exited = new Promise((r) => qemu!.once('exit', r));
      qemu.kill('SIGTERM');
      await exited;
    }
    if (work) rmSync(work, { recursive: true, force: true });
    // The repository carries a 14 MB kernel: do not leave it in /tmp.
    if (repo) rmSync(dirname(repo), { recursive: true, force: true });
  });

  async function get(path: string): Promise<string> {
    const deadline = Date.now() + BOOT_DEADLINE_MS;
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${httpPort}${path}`, { signal: AbortSignal.timeout(5_000) });
        if (res.status === 200) return await res.text();
      } catch {
        // not up yet: qemu forwards the port before the guest listens
      }
      if (qemu?.exitCode !== null || Date.now() > deadline) {
        let log = '';
        try {
          log = readFileSync(serial, 'utf8');
        } catch {}
        throw new Error(`the guest did not answer HTTP on ${path} (qemu exit ${qemu?.exitCode}); serial console:\n${log.slice(-4000)}`);
      }
      await new Promise((r) => setTimeout(r, 2_000));
    }
  }

  it('records the test package and its version in the manifest', () => {
    expect(manifest.packages).toContainEqual({ name: HELLO_PAGE.name, version: HELLO_PAGE.version });
    expect(manifest.packages.map((p) => p.name)).toContain('busybox');
    expect(built.segments.map((s) => s.name)).toEqual(['base', 'overlay', 'secrets']);
  });

  it('boots and serves the package\'s file, and what setup.sh wrote, over HTTP', async () => {
    const body = await get('/hello');
    expect(body).toContain('hello from the hello-page package, version 1.2.3');
    expect(body).toContain(`setup.sh ran in build ${built.buildId}`);
    // The kernel and NIC driver from root/ brought the network up as rc.ramboot says.
    const log = readFileSync(serial, 'utf8');
    expect(log).toContain(`Linux version ${KVER.split('-cloud')[0]}`);
    expect(log).toMatch(/RAMBOOT-ALPINE-UP .*inet 10\.0\.2\.15\/24/);
  });

  it('runs the build it was given', async () => {
    const body = await get('/release');
    expect(body).toContain(`build=${built.buildId}`);
  });

  it('reuses the package stage when only root/ changes', async () => {
    writeFileSync(join(repo, 'root/etc/motd'), 'changed\n');
    commitAll(repo, 'root/ only');
    const r = await execa('node', [CLI, 'build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images2'), '--json'], { reject: false, stdin: 'ignore' });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const next = JSON.parse(String(r.stdout)) as Built;
    expect(next.stageReused).toBe(true);
    expect(next.segments[0]!.sha256).toBe(built.segments[0]!.sha256);
  });
});
