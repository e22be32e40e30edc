import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSlots } from '../../deploy/medium.js';
import { waitUntil } from '../../deploy/reboot.js';
import { readRunning } from '../../deploy/running.js';
import { connect, type Target } from '../../deploy/ssh.js';
import { startVm, type Vm } from '../../vm/qemu.js';
import { SHARED_STATE, buildRepo, freePort, initRepo, ramboot, tempDir, type Built } from '../helpers/ramboot.js';

// A stick laid out like the reference NAS's (boot/vmlinuz-lts, boot/initramfs-lts, a
// syslinux.cfg of its owner's): `ramboot bootloader install` adopts it without breaking
// what boots, and from then on ramboot deploys to it like to any medium it made.

const MINUTES = 60_000;

describe('a reference-NAS medium adopted by `ramboot bootloader install`, then deployed to (virtual NAS, Debian example)', () => {
  let vm: Vm;
  let repo: string;
  let env: Record<string, string>;
  let work: string;
  let first: Built;
  let target: Target;
  let reach: string[];
  const git = (...args: string[]) => execa('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd: repo });
  const cli = (args: string[]) => ramboot(args, { ...env, RAMBOOT_CACHE: join(SHARED_STATE, 'cache') });

  beforeAll(async () => {
    ({ repo, env } = await initRepo('debian'));
    work = tempDir('adopt');
    const [sshPort, httpPort] = [await freePort(), await freePort()];
    const c = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
    c.trial = { confirm_timeout: '4m', reboot_deadline: '6m' };
    c.health = { deadline: '2m', checks: [{ name: 'status page', http: `http://127.0.0.1:${httpPort}/release`, body: 'ramboot.slot=new' }] };
    writeFileSync(join(repo, 'ramboot.yaml'), stringify(c));
    await git('add', '-A');
    await git('commit', '-q', '-m', 'adoption test settings');
    first = await buildRepo(repo, join(work, 'images'), env);
    const manifest = JSON.parse(readFileSync(join(first.imageDir, 'manifest.json'), 'utf8'));
    // The reference layout: one kernel and one initramfs per slot, under their slot's name.
    const disk = join(work, 'disk.img');
    const mt = (cmd: string, ...args: string[]) => execFileSync(cmd, ['-i', disk, ...args], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    execFileSync('mkfs.vfat', ['-C', '-F', '32', '-i', manifest.medium.uuid.replace('-', ''), '-n', 'NAS', disk, String(400 * 1024)]);
    mt('mmd', '::/boot', '::/boot/syslinux');
    execFileSync('syslinux', ['--install', '--directory', '/boot/syslinux', disk]);
    const initramfs = join(work, 'initramfs-lts');
    writeFileSync(initramfs, Buffer.concat(['base', 'overlay', 'secrets'].map((s) => readFileSync(join(first.imageDir, `${s}.cpio.zst`)))));
    mt('mcopy', join(first.imageDir, 'vmlinuz'), '::/boot/vmlinuz-lts');
    mt('mcopy', initramfs, '::/boot/initramfs-lts');
    const cfg = join(work, 'syslinux.cfg');
    writeFileSync(cfg, `SERIAL 0 115200\nDEFAULT lts\nPROMPT 0\nTIMEOUT 10\nLABEL lts\n  LINUX /boot/vmlinuz-lts\n  INITRD /boot/initramfs-lts\n  APPEND ${manifest.append}\n`);
    mt('mcopy', cfg, '::/boot/syslinux/syslinux.cfg');
    vm = startVm({ disk, sshPort, httpPort, serialLog: join(work, 'serial.log') });
    await vm.waitForSsh(10 * MINUTES);
    const sshKey = join(env.HOME!, '.config/ramboot/id_ed25519');
    target = { name: 'nas', address: '127.0.0.1', port: sshPort, user: 'root', identityFile: sshKey, hostKey: manifest.hostKey };
    reach = ['--state', join(work, 'state'), '--address', '127.0.0.1', '--port', String(sshPort), '--ssh-key', sshKey];
  }, 25 * MINUTES);

  afterAll(async () => {
    await vm?.stop();
  });

  it('adopts the medium: the running image becomes lts, syslinux.cfg is ramboot\'s, extlinux is installed, the old config kept', async () => {
    const s = await connect(target);
    expect((await readRunning(s)).slot).toBeUndefined();
    s.close();
    const r = await cli(['bootloader', 'install', '--repo', repo, '--host-key', target.hostKey, ...reach]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^\S+ booted with BIOS; adopted lts; extlinux installed; lts=adopted-[0-9a-f]{12}; former config kept as boot\/syslinux\/syslinux\.cfg\.pre-ramboot/);
    const s2 = await connect(target);
    const slots = await readSlots(s2, '/media/usb');
    expect(slots.lts?.initrds).toHaveLength(1);
    expect((await s2.exec('ls /media/usb/boot/syslinux')).stdout).toMatch(/ldlinux\.sys/);
    s2.close();
  }, 10 * MINUTES);

  it('deploys a change to the adopted medium through the trial; a plain reboot boots it from lts', async () => {
    writeFileSync(join(repo, 'root/etc/adopted'), 'deployed to an adopted medium\n');
    await git('add', '-A');
    await git('commit', '-q', '-m', 'a change for the adopted medium');
    const r = await cli(['deploy', '--repo', repo, '--host-key', target.hostKey, ...reach]);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^promoted: build (\S+) is the default; build adopted-[0-9a-f]{12} is kept as old/);
    const built = /^promoted: build (\S+) /.exec(r.stdout)![1]!;
    const s = await connect(target);
    const { bootId } = await readRunning(s);
    await s.exec('openrc-shutdown -r now', { tolerateDisconnect: true });
    s.close();
    const back = await waitUntil(target, 8 * MINUTES, (x) => x.bootId !== bootId);
    expect(back.running).toMatchObject({ slot: 'lts', build: built });
  }, 20 * MINUTES);
});
