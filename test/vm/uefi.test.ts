import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { LOADER_CONF, SD_BOOT_PATH, entryFile, renderEntry, renderLoaderConf } from '../../deploy/entries.js';
import { candidateFiles } from '../../deploy/medium.js';
import type { SlotEntry } from '../../deploy/slots.js';
import { readManifest, type Manifest } from '../../image/manifest.js';
import { SD_BOOT_SOURCE } from '../../deploy/entries.js';
import { diskFirmware, formatDisk } from '../../vm/format.js';
import { OVMF_VARS, startVm, varsPath } from '../../vm/qemu.js';
import { cloudKernelVersion } from '../helpers/kernel.js';
import { freePort, tempDir } from '../helpers/ramboot.js';

// The UEFI virtual NAS with real OVMF and real systemd-boot, booting tiny images (Debian's
// cloud kernel and a busybox initramfs whose init prints a marker and its command line,
// then powers off or reboots), so a boot takes seconds, not a distro's minutes.

const KERNEL = `/boot/vmlinuz-${cloudKernelVersion()}`;
const VOLUME_ID = '52A0-0B07';
const BOOT_MS = 120_000;
const ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
/** mtools' name for the ESP formatDisk makes: the partition at 1 MiB. */
const esp = (disk: string) => `${disk}@@1M`;

let work: string;
let first: string;
let second: string;

/**
 * An image directory formatDisk reads: the kernel and one busybox segment whose init
 * prints `TINY-INIT <name>` and /proc/cmdline, then ends the boot (`poweroff` or `reboot`).
 */
async function tinyImage(name: string, end: 'poweroff' | 'reboot'): Promise<string> {
  const dir = join(work, name);
  const root = join(dir, 'root');
  for (const d of ['bin', 'proc', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  for (const applet of ['sh', 'cat', 'mount']) symlinkSync('busybox', join(root, 'bin', applet));
  writeFileSync(join(root, 'init'), `#!/bin/busybox sh\nexport PATH=/bin\necho "TINY-INIT ${name}"\nmount -t proc proc /proc\necho "cmdline: $(cat /proc/cmdline)"\n/bin/busybox ${end} -f\n`);
  chmodSync(join(root, 'init'), 0o755);
  const cpio = await execa('sh', ['-c', 'find . | cpio -o -H newc --quiet | zstd -q -3'], { cwd: root, encoding: 'buffer' });
  writeFileSync(join(dir, 'base.cpio.zst'), cpio.stdout);
  copyFileSync(KERNEL, join(dir, 'vmlinuz'));
  const file = (f: string) => {
    const data = readFileSync(join(dir, f));
    return { file: f, sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length };
  };
  const manifest = {
    formatVersion: 2,
    buildId: name,
    medium: { mountpoint: '/media/usb', uuid: VOLUME_ID, type: 'vfat' },
    settings: { boot: { firmware: 'uefi' } },
    kernel: file('vmlinuz'),
    segments: [{ name: 'base', ...file('base.cpio.zst') }],
    append: 'console=ttyS0 panic=-1',
  } as unknown as Manifest;
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

/** The slot entry naming an image's content-addressed files, as deploy writes it. */
async function slotEntry(imageDir: string): Promise<SlotEntry & { files: { local: string; path: string }[] }> {
  const m = await readManifest(imageDir);
  const { kernel, initrds } = candidateFiles(imageDir, m);
  return { buildId: m.buildId, kernel: kernel.path, initrds: initrds.map((f) => f.path), append: m.append, files: [kernel, ...initrds] };
}

async function mtools(cmd: string, args: string[]): Promise<string> {
  return (await execa(cmd, args, { env: ENV })).stdout;
}

async function entries(disk: string): Promise<string[]> {
  return (await mtools('mdir', ['-b', '-i', esp(disk), '::/loader/entries'])).trim().split('\n').map((p) => p.replace(/^.*\/loader\/entries\//, '')).sort();
}

/** Boots the disk until the guest powers off; the serial log, and how many qemu processes it took. */
async function bootUntilOff(disk: string, name: string): Promise<{ serial: string; boots: number; ms: number }> {
  const t0 = Date.now();
  const vm = startVm({ disk, sshPort: await freePort(), httpPort: await freePort(), serialLog: join(work, `${name}.serial.log`), memoryMiB: 256 });
  const timer = setTimeout(() => void vm.stop(), BOOT_MS - 10_000);
  const end = await vm.stopped;
  clearTimeout(timer);
  const serial = vm.serial().replace(/\r/g, '');
  expect(end.reason, serial.slice(-3000)).toBe('the machine powered off');
  return { serial, boots: vm.boots(), ms: Date.now() - t0 };
}

async function uefiDisk(name: string): Promise<string> {
  const disk = join(work, `${name}.img`);
  await formatDisk({ disk, imageDir: first, sizeMiB: 64, firmware: 'uefi' });
  return disk;
}

beforeAll(async () => {
  work = tempDir('uefi');
  first = await tinyImage('first', 'poweroff');
  second = await tinyImage('second', 'reboot');
});

describe('ramboot format --firmware uefi', () => {
  it('makes a 0600 GPT disk whose EFI system partition at 1 MiB has the volume id, systemd-boot at the removable path, loader.conf and the lts entry', async () => {
    const disk = await uefiDisk('layout');
    expect(statSync(disk).mode & 0o777).toBe(0o600);
    expect(diskFirmware(disk)).toBe('uefi');
    const part = (await execa('sgdisk', ['-i', '1', disk])).stdout;
    expect(part).toMatch(/Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B/);
    expect(part).toMatch(/First sector: 2048 /);
    expect(await mtools('minfo', ['-i', esp(disk), '::'])).toMatch(/serial number: 52A00B07/i);
    const sdBoot = join(work, 'BOOTX64.EFI');
    await mtools('mcopy', ['-i', esp(disk), `::/${SD_BOOT_PATH}`, sdBoot]);
    expect(readFileSync(sdBoot).equals(readFileSync(SD_BOOT_SOURCE))).toBe(true);
    expect(await mtools('mtype', ['-i', esp(disk), `::/${LOADER_CONF}`])).toBe(renderLoaderConf().trimEnd());
    expect(await entries(disk)).toEqual(['lts.conf']);
    const lts = await slotEntry(first);
    expect(await mtools('mtype', ['-i', esp(disk), `::/${entryFile('lts')}`])).toBe(renderEntry('lts', lts).trimEnd());
    expect((await mtools('mdir', ['-b', '-i', esp(disk), '::/boot/ramboot'])).trim().split('\n')).toHaveLength(2);
  });
});

describe('the virtual NAS under OVMF', () => {
  it('OVMF with an empty variable store finds real systemd-boot at the removable path of the USB stick, which boots the lts entry: its init runs with ramboot.slot=lts', async () => {
    const { serial, boots } = await bootUntilOff(await uefiDisk('lts'), 'lts');
    expect(serial).toContain('TINY-INIT first');
    expect(serial).toMatch(/cmdline: .*ramboot\.slot=lts ramboot\.build=first/);
    expect(boots).toBe(1);
  }, BOOT_MS);

  it('boot counting: new+1-0 boots once and is renamed new+0-1 on the ESP; the guest reboot starts a fresh qemu process, which boots lts', async () => {
    const disk = await uefiDisk('counting');
    const entry = await slotEntry(second);
    // The kernel is lts's, already there under its content address: only the new segment is copied.
    const there = await mtools('mdir', ['-b', '-i', esp(disk), '::/boot/ramboot']);
    for (const f of entry.files.filter((f) => !there.includes(f.path))) await mtools('mcopy', ['-i', esp(disk), f.local, `::/${f.path}`]);
    const text = join(work, 'new.conf');
    writeFileSync(text, renderEntry('new', entry));
    await mtools('mcopy', ['-i', esp(disk), text, `::/${entryFile('new', { left: 1, done: 0 })}`]);

    // The second image reboots once it ran, as a trial that never confirms would be reset.
    const { serial, boots } = await bootUntilOff(disk, 'counting');
    const newAt = serial.indexOf('TINY-INIT second');
    const ltsAt = serial.indexOf('TINY-INIT first');
    expect(newAt, serial.slice(-3000)).toBeGreaterThanOrEqual(0);
    expect(serial).toMatch(/cmdline: .*ramboot\.slot=new ramboot\.build=second/);
    expect(ltsAt).toBeGreaterThan(newAt);
    expect(serial.slice(ltsAt)).toMatch(/cmdline: .*ramboot\.slot=lts ramboot\.build=first/);
    expect(boots).toBe(2);
    expect(await entries(disk)).toEqual(['lts.conf', 'new+0-1.conf']);
  }, 2 * BOOT_MS);

  it('keeps the machine\'s variable store 0600 beside its disk, written by the firmware and the same file across boots', async () => {
    const disk = await uefiDisk('vars');
    const vars = varsPath(disk);
    expect(vars).toBe(`${disk}.efivars`);
    await bootUntilOff(disk, 'vars-1');
    const after1 = statSync(vars);
    expect(after1.mode & 0o777).toBe(0o600);
    const written = readFileSync(vars);
    // OVMF records the boot (its boot options) in NVRAM: the store is no longer the empty template.
    expect(written.equals(readFileSync(OVMF_VARS))).toBe(false);
    await bootUntilOff(disk, 'vars-2');
    expect(statSync(vars).ino).toBe(after1.ino);
    expect(readFileSync(vars).equals(readFileSync(OVMF_VARS))).toBe(false);
  }, 2 * BOOT_MS);
});
