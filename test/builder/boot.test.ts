import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packBase, packOverlay } from '../../builder/segments.js';
import { cloudKernelVersion } from '../helpers/kernel.js';

// A real kernel unpacks our segments, packed as a build packs them: the base, then an
// overlay that replaces a file, turns a file into a symlink and a symlink into a file,
// and replaces one name of a hardlink group of the base, concatenated as the
// bootloader does with INITRD base,overlay.

const KERNEL = `/boot/vmlinuz-${cloudKernelVersion()}`;
const BOOT_TIMEOUT_MS = 90_000;
const APPLETS = ['sh', 'cat', 'readlink', 'stat', 'test', '[', 'poweroff'];

const INIT = `#!/bin/sh
export PATH=/bin
echo "RAMBOOT-INIT pid=$$"
echo "message=$(cat /etc/message)"
echo "motd=$(readlink /etc/motd):$(cat /etc/motd)"
[ -f /etc/was-link ] && [ ! -L /etc/was-link ] && echo "was-link=file:$(cat /etc/was-link)"
[ /etc/hl-a -ef /etc/hl-c ] && echo "hardlink=one-inode:$(cat /etc/hl-c)"
echo "hl-a=$(cat /etc/hl-a):$(stat -c %a /etc/hl-a)"
echo "hl-b=$(cat /etc/hl-b):$(stat -c %a /etc/hl-b)"
[ /etc/hl-a -ef /etc/hl-b ] || echo "hl-b=own-inode"
echo "console=$(stat -c '%F %t,%T' /dev/console)"
[ -d /empty ] && echo "empty-dir=present"
echo "RAMBOOT-INIT-DONE"
poweroff -f
`;

let work: string;

function write(root: string, path: string, content: string, mode = 0o644): void {
  writeFileSync(join(root, path), content);
  chmodSync(join(root, path), mode);
}

function makeBase(root: string): void {
  for (const d of ['bin', 'etc', 'dev', 'empty']) mkdirSync(join(root, d));
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  for (const applet of APPLETS) symlinkSync('busybox', join(root, 'bin', applet));
  write(root, 'init', INIT, 0o755);
  write(root, 'etc/message', 'from base\n');
  write(root, 'etc/motd', 'base motd\n');
  symlinkSync('message', join(root, 'etc/was-link'));
  write(root, 'etc/hl-a', 'linked\n');
  linkSync(join(root, 'etc/hl-a'), join(root, 'etc/hl-b'));
  linkSync(join(root, 'etc/hl-a'), join(root, 'etc/hl-c'));
  execFileSync('mknod', [join(root, 'dev/console'), 'c', '5', '1']);
}

function makeOverlay(root: string): void {
  mkdirSync(join(root, 'etc'));
  write(root, 'etc/message', 'from overlay\n');
  symlinkSync('message', join(root, 'etc/motd'));
  write(root, 'etc/was-link', 'now a file\n');
  // One name of the base's three-name link group, with other content and another mode.
  write(root, 'etc/hl-b', 'replaced\n', 0o600);
}

/** Boots the kernel with `initrd` and returns the serial console output. */
function boot(initrd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const qemu = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-m', '256', '-nographic', '-no-reboot',
      '-kernel', KERNEL, '-initrd', initrd, '-append', 'console=ttyS0 panic=-1',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    qemu.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    qemu.stderr.setEncoding('utf8').on('data', (s: string) => (out += s));
    const timer = setTimeout(() => {
      qemu.kill('SIGKILL');
      reject(new Error(`the guest did not power off within ${BOOT_TIMEOUT_MS / 1000} s:\n${out.slice(-4000)}`));
    }, BOOT_TIMEOUT_MS);
    qemu.once('error', reject);
    qemu.once('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ramboot-boot-'));
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('booting a real kernel from our segments', () => {
  it('runs /init from the base and lets the overlay override files, file types and one name of a hardlink group', async () => {
    const [base, overlay] = [join(work, 'base'), join(work, 'overlay')];
    mkdirSync(base);
    mkdirSync(overlay);
    makeBase(base);
    makeOverlay(overlay);
    const stage = { key: 'boot-test', contentId: 'boot-test', root: base, packages: [], reused: false };
    const noDeletions = { removed: new Set<string>(), opaque: new Set<string>() };
    const packedBase = await packBase(stage, noDeletions, join(work, 'base-cache'), join(work, 'base.cpio.zst'));
    expect(packedBase.linked.sort()).toEqual(['etc/hl-a', 'etc/hl-b', 'etc/hl-c']);
    await packOverlay(overlay, join(work, 'overlay.cpio.zst'), new Set(packedBase.linked));
    const initrd = join(work, 'cat.img');
    writeFileSync(initrd, Buffer.concat(['base', 'overlay'].map((s) => readFileSync(join(work, `${s}.cpio.zst`)))));

    const out = (await boot(initrd)).replace(/\r/g, '');

    expect(out).toContain('RAMBOOT-INIT pid=1');
    expect(out).toContain('message=from overlay');
    expect(out).toContain('motd=message:from overlay');
    expect(out).toContain('was-link=file:now a file');
    // The overlay replaced one name; the base's other two names are still one inode, with the base's content and mode.
    expect(out).toContain('hardlink=one-inode:linked');
    expect(out).toContain('hl-a=linked:644');
    expect(out).toContain('hl-b=replaced:600');
    expect(out).toContain('hl-b=own-inode');
    expect(out).toContain('console=character special file 5,1');
    expect(out).toContain('empty-dir=present');
    expect(out).toContain('RAMBOOT-INIT-DONE');
    expect(out).not.toMatch(/junk at the end|broken padding|invalid magic|Kernel panic/);
  });
});
