import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../image/manifest.js';
import { createServer } from 'node:net';
import { diskFirmware, formatDisk } from '../../vm/format.js';
import { startVm } from '../../vm/qemu.js';

// `ramboot format` makes the virtual NAS's disk, which carries the secrets segment: it
// must be its owner's alone whatever the umask, and still a bootable FAT medium. No qemu
// here: the disk is read back with mtools.

let umask: number;
let work: string;
beforeAll(() => {
  umask = process.umask(0o022);
  work = mkdtempSync(join(tmpdir(), 'ramboot-format-'));
});
afterAll(() => {
  process.umask(umask);
});

/** The least of an image directory formatDisk reads: a manifest with the medium's volume id, a kernel, one segment. */
function fakeImage(): string {
  const dir = join(work, 'images', 'b1');
  mkdirSync(dir, { recursive: true });
  const file = (name: string, data: Buffer) => {
    writeFileSync(join(dir, name), data);
    return { file: name, sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length };
  };
  const manifest = {
    formatVersion: 2,
    buildId: 'b1',
    medium: { mountpoint: '/media/usb', uuid: '52A0-0B07', type: 'vfat' },
    kernel: file('vmlinuz', randomBytes(4096)),
    segments: [{ name: 'secrets', ...file('secrets.cpio.zst', randomBytes(4096)) }],
    append: 'console=ttyS0',
  } as unknown as Manifest;
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

describe('ramboot format', () => {
  it('under umask 022 the disk is 0600, a FAT medium with the volume id and the image in lts', async () => {
    const disk = join(work, 'disk.img');
    await formatDisk({ disk, imageDir: fakeImage(), sizeMiB: 64 });
    expect(statSync(disk).mode & 0o777).toBe(0o600);
    expect(statSync(disk).size).toBe(64 * 2 ** 20);
    // A FAT from the first sector, no GPT: `ramboot vm` boots it with SeaBIOS.
    expect(diskFirmware(disk)).toBe('bios');
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
    expect((await execa('minfo', ['-i', disk, '::'], { env })).stdout).toMatch(/serial number: 52A00B07/i);
    expect((await execa('mtype', ['-i', disk, '::/boot/syslinux/syslinux.cfg'], { env })).stdout).toMatch(/b1/);
    expect((await execa('mdir', ['-b', '-i', disk, '::/boot/ramboot'], { env })).stdout.trim().split('\n')).toHaveLength(2);
  });
});

describe('the virtual NAS', () => {
  it('whose SSH port another process holds stops at once, and the error says why qemu stopped, not only that it did', async () => {
    const disk = join(work, 'taken.img');
    await formatDisk({ disk, imageDir: fakeImage(), sizeMiB: 64 });
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const port = (holder.address() as { port: number }).port;
    try {
      const vm = startVm({ disk, sshPort: port, httpPort: port + 1, serialLog: join(work, 'taken.serial.log') });
      await expect(vm.waitForSsh(60_000)).rejects.toThrow(new RegExp(`^failed to reach the virtual NAS: qemu stopped \\(qemu exited with 1: .*${port}.*\\); serial log `));
      await vm.stop();
    } finally {
      holder.close();
    }
  });
});
