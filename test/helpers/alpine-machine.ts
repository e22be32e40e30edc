import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cloudKernelVersion } from './kernel.js';
import { freePort } from './ramboot.js';

// A small Alpine test machine that boots under `qemu -kernel` in seconds: busybox init,
// a Debian cloud kernel and its virtio NIC modules carried in the repository's own
// root/, and the status service (bins/, as the Debian example has it) on port 80.

const here = dirname(fileURLToPath(import.meta.url));
export const KVER = cloudKernelVersion();
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

type Files = Record<string, string | [string | Buffer, number]>;

/** The machine's repository files; `config` is its ramboot.yaml, `packages` its packages file. */
export function machineFiles(config: string, packages = '# from the test mirror only\nhello-page\n'): Files {
  const files: Files = {
    'ramboot.yaml': config,
    packages,
    'root/init': ['#!/bin/sh\n# The kernel runs /init; busybox init reads /etc/inittab.\nexec /sbin/init\n', 0o755],
    'root/etc/inittab': ['::sysinit:/etc/rc.ramboot', '::respawn:/usr/local/bin/monitor -listen :80', '::ctrlaltdel:/sbin/reboot', ''].join('\n'),
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
  const bins = join(here, '../../examples/debian/bins');
  const walk = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]));
  for (const f of walk(bins)) files[`bins/${relative(bins, f)}`] = [readFileSync(f), 0o644];
  return files;
}

export interface BootedMachine {
  /** GET a path of the status service, waiting for the machine to come up. */
  get(path: string): Promise<string>;
  serial(): string;
  stop(): Promise<void>;
}

/** Boots an image as syslinux would: its kernel, and its segments one after the other as the initrd. */
export async function bootImage(imageDir: string, buildId: string, work: string): Promise<BootedMachine> {
  const manifest = JSON.parse(readFileSync(join(imageDir, 'manifest.json'), 'utf8')) as { append: string };
  const initrd = join(work, `initrd-${buildId}.img`);
  writeFileSync(initrd, Buffer.concat(['base', 'overlay', 'secrets'].map((s) => readFileSync(join(imageDir, `${s}.cpio.zst`)))));
  const port = await freePort();
  const serialLog = join(work, `serial-${buildId}.log`);
  const qemu: ChildProcess = spawn(
    'qemu-system-x86_64',
    [
      '-accel', 'tcg', '-m', '384', '-smp', '1', '-display', 'none', '-no-reboot',
      '-serial', `file:${serialLog}`, '-monitor', 'none',
      '-kernel', join(imageDir, 'vmlinuz'), '-initrd', initrd,
      '-append', `${manifest.append} panic=-1 ramboot.build=${buildId}`,
      '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:80`, '-device', 'virtio-net-pci,netdev=n0',
    ],
    { stdio: 'ignore' },
  );
  const serial = () => {
    try {
      return readFileSync(serialLog, 'utf8');
    } catch {
      return '';
    }
  };
  return {
    serial,
    async get(path) {
      const deadline = Date.now() + BOOT_DEADLINE_MS;
      for (;;) {
        try {
          const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5_000) });
          if (res.status === 200) return await res.text();
        } catch {
          // not up yet: qemu forwards the port before the guest listens
        }
        if (qemu.exitCode !== null || Date.now() > deadline) {
          throw new Error(`the guest did not answer HTTP on ${path} (qemu exit ${qemu.exitCode}); serial console:\n${serial().slice(-4000)}`);
        }
        await new Promise((r) => setTimeout(r, 2_000));
      }
    },
    async stop() {
      if (qemu.exitCode !== null) return;
      const exited = new Promise((r) => qemu.once('exit', r));
      qemu.kill('SIGTERM');
      await exited;
    },
  };
}
