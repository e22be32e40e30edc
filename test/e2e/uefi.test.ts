import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SD_BOOT_PATH } from '../../deploy/entries.js';
import { formatDisk } from '../../vm/format.js';
import { startVm, type Vm } from '../../vm/qemu.js';
import { startController } from '../helpers/controller.js';
import { MEDIUM, startNas, type VirtualNas } from '../helpers/nas.js';
import { TRIAL_WATCHDOG, hangingInit } from '../helpers/trials.js';
import { SHARED_STATE, freePort, type Built } from '../helpers/ramboot.js';

// The UEFI path end to end: the virtual NAS under OVMF with its own variable store, real
// systemd-boot at the removable path, the slots as boot entries and the trial as systemd-boot's
// boot counting. One machine, the Debian example built with boot.firmware: uefi; each `it`
// leaves it running a known build from `lts`. The BIOS tests prove the rest of the protocol;
// here run the cases that prove the UEFI layout.

const MINUTES = 60_000;

describe('deploying to the virtual NAS under OVMF with systemd-boot (Debian example, boot.firmware: uefi)', () => {
  let nas: VirtualNas;
  let current: Built;
  let adopted: Vm | undefined;

  const entries = async () => (await nas.sh(`ls ${MEDIUM}/loader/entries`)).trim().split('\n').sort();
  const segmentFile = (b: Built, name: string) => `boot/ramboot/${b.segments.find((s) => s.name === name)!.sha256}.cpio.zst`;

  beforeAll(async () => {
    nas = await startNas('uefi e2e', { firmware: 'uefi' });
    current = nas.first;
  }, 20 * MINUTES);

  afterAll(async () => {
    await adopted?.stop();
    await nas?.stop();
  });

  it('boots its first build from the lts entry through systemd-boot, with its own variable store beside the disk', async () => {
    expect(await nas.running()).toMatchObject({ slot: 'lts', build: current.buildId });
    expect(await entries()).toEqual(['lts.conf']);
    expect(await nas.sh('test -d /sys/firmware/efi && echo uefi')).toBe('uefi\n');
    expect(readFileSync(join(nas.work, 'disk.img.efivars')).length).toBeGreaterThan(0);
  });

  it('8: an image configured for BIOS is refused on this UEFI machine with a clear error, before anything is written', async () => {
    const before = await nas.listing();
    nas.settings({ firmware: 'bios' });
    const bios = await nas.change({}, 'configured for BIOS');
    const r = await nas.deploy(bios.imageDir);
    expect(r.code).toBe(11);
    expect(r.stdout).toMatch(/ramboot.yaml says boot.firmware: bios, but nas booted with UEFI \(\/sys\/firmware\/efi exists\): set boot.firmware: uefi in ramboot.yaml/);
    expect(await nas.listing()).toBe(before);
    nas.settings();
  }, 10 * MINUTES);

  it('1, 5: `ramboot up` repairs a damaged base on the ESP before any entry names it, trial-boots the commit from new+1-0.conf and promotes it; status shows the entries and the running build', async () => {
    const base = segmentFile(current, 'base');
    await nas.damage(base);
    nas.settings({ address: true });
    const b = await nas.change({ 'root/etc/uefi-test': 'promoted through systemd-boot\n' }, 'a healthy change for UEFI');
    const ctrl = await startController(['--repo', nas.repo], {
      state: nas.stateDir,
      listen: await freePort(),
      env: { ...nas.env, RAMBOOT_CACHE: join(SHARED_STATE, 'cache') },
      logFile: join(nas.work, 'controller.log'),
    });
    try {
      const head = (await execa('git', ['rev-parse', 'HEAD'], { cwd: nas.repo })).stdout.trim();
      const r = await ctrl.waitFor(head, 20 * MINUTES);
      expect(r.outcome, r.message).toBe('promoted');
      expect(r.message).toMatch(/the medium was damaged: repaired boot\/ramboot\/[0-9a-f]{64}\.cpio\.zst before the label was written/);
    } finally {
      await ctrl.kill('SIGTERM');
    }
    const built = JSON.parse(readFileSync(join(nas.stateDir, 'deploy.jsonl'), 'utf8').trim().split('\n').at(-1)!).buildId as string;
    expect(nas.boots().at(-1)).toBe(`new ${built}`);
    expect(await entries()).toEqual(['lts.conf', 'old.conf']);
    const status = await nas.cli(['status', '--repo', nas.repo, ...nas.reach()]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/boots +UEFI, systemd-boot entries: lts\.conf old\.conf/);
    expect(status.stdout).toMatch(new RegExp(`running +build ${built} from slot new`));
    expect(status.stdout).toMatch(new RegExp(`lts +build ${built}`));
    expect((await nas.reboot())).toMatchObject({ slot: 'lts', build: built });
    current = { ...b, buildId: built };
  }, 30 * MINUTES);

  it('2: a commit whose health check fails is rolled back, and a plain reboot boots lts', async () => {
    nas.settings({ checks: [{ name: 'always fails', cmd: 'echo "the pool is degraded"; false', retries: 0 }] });
    const bad = await nas.change({ 'root/etc/uefi-test': 'unhealthy\n' }, 'an unhealthy commit');
    const r = await nas.deploy(bad.imageDir);
    expect(r.code).toBe(12);
    expect(r.stdout).toMatch(/health check "always fails" failed after 1 attempt: exit 1: the pool is degraded/);
    // On the ESP too, the overlay was made on the machine from lts's: a few of its pieces were sent.
    const journal = readFileSync(join(nas.stateDir, 'deploy.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const sent = journal.filter((e) => e.step === 'label').at(-1).bytesSent as number;
    const overlay = bad.segments.find((x) => x.name === 'overlay')!.bytes;
    nas.log(`the unhealthy commit sent ${sent} bytes; its overlay has ${overlay}`);
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(overlay);
    expect(await nas.running()).toMatchObject({ slot: 'lts', build: current.buildId });
    expect(await entries()).toEqual(['lts.conf', 'old.conf']);
    expect(await nas.reboot()).toMatchObject({ slot: 'lts', build: current.buildId });
    nas.settings();
  }, 20 * MINUTES);

  it('3: a trial whose kernel panics (no agent ever runs) comes back on lts by itself: its one try is used', async () => {
    const init = readFileSync(join(nas.repo, 'root/init'), 'utf8');
    const b = await nas.change({ 'root/init': ['#!/bin/sh\necho "this init gives up"\nexit 1\n', 0o755] }, 'an image whose init dies');
    const bootsBefore = nas.boots().length;
    const r = await nas.deploy(b.imageDir);
    expect(r.code).toBe(13);
    expect(r.stdout).toMatch(/^trial unreachable \(rolled back\): the machine came back on slot lts/);
    expect(nas.vm.serial()).toMatch(/Kernel panic - not syncing: Attempted to kill init/);
    expect(nas.boots().slice(bootsBefore)).toEqual([`new ${b.buildId}`, `lts ${current.buildId}`]);
    expect(await entries()).toEqual(['lts.conf', 'old.conf']);
    await nas.change({ 'root/init': [init, 0o755] }, 'a working init again');
  }, 20 * MINUTES);

  it('7: a trial whose init hangs before any service is reset by the watchdog armed at the start of the boot, and comes back on lts', async () => {
    const { built: b, restore } = await hangingInit(nas);
    const bootsBefore = nas.boots().length;
    const r = await nas.deploy(b.imageDir);
    expect(r.code).toBe(13);
    expect(nas.vm.serial()).toContain(`ramboot-early: trial boot: /dev/watchdog armed (${TRIAL_WATCHDOG})`);
    expect(nas.vm.serial()).toMatch(/this init hangs/);
    expect(nas.boots().slice(bootsBefore)).toEqual([`new ${b.buildId}`, `lts ${current.buildId}`]);
    expect(await entries()).toEqual(['lts.conf', 'old.conf']);
    await restore();
  }, 20 * MINUTES);

  it('4: power lost during the upload and right after the entries are written: the default entry boots a complete image each time, and the next deploy finishes', async () => {
    const b = await nas.change({ 'root/var/lib/blob': Buffer.alloc(24 * 1024 * 1024, 7) }, 'a large change');
    const cut = await nas.deployProcess(b.imageDir, /^deploy: uploading to nas/m);
    expect(cut.killed).toBe(true);
    expect(await nas.powerCycle()).toMatchObject({ slot: 'lts', build: current.buildId });
    const armed = await nas.deployProcess(b.imageDir, /^deploy: arming the boot-once entry/m);
    expect(armed.killed).toBe(true);
    expect(await entries()).toEqual(['lts.conf', 'new+1-0.conf', 'old.conf']);
    // The counted entry was written whole: the power cut boots it or lts, a complete image either way.
    const booted = await nas.powerCycle();
    const slots = await nas.slots();
    expect(booted.cmdlineBuild).toBe(slots[booted.slot as 'lts' | 'new']?.buildId);
    const r = await nas.deployProcess(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^promoted: build ${b.buildId} is the default`));
    current = b;
  }, 30 * MINUTES);

  it('6: a medium in the reference NAS\'s UEFI layout (one unified kernel image at EFI/BOOT/BOOTX64.EFI) is adopted, boots as lts, and is deployed to', async () => {
    // A unified kernel image made from the running build stands in for the reference NAS's.
    const dir = join(nas.work, 'uki');
    await execa('mkdir', ['-p', dir]);
    const kernel = join(current.imageDir, 'vmlinuz');
    const initrd = join(dir, 'initrd');
    writeFileSync(initrd, Buffer.concat(current.segments.map((s) => readFileSync(join(current.imageDir, `${s.name}.cpio.zst`)))));
    writeFileSync(join(dir, 'cmdline'), 'console=ttyS0 net.ifnames=0 panic=10');
    const uki = join(dir, 'BOOTX64.EFI');
    await execa('objcopy', [
      '--add-section', `.cmdline=${join(dir, 'cmdline')}`, '--change-section-vma', '.cmdline=0x30000',
      '--add-section', `.linux=${kernel}`, '--change-section-vma', '.linux=0x2000000',
      '--add-section', `.initrd=${initrd}`, '--change-section-vma', '.initrd=0x3000000',
      '/usr/lib/systemd/boot/efi/linuxx64.efi.stub', uki,
    ]);
    // The stick: a GPT with the ESP (the fstab's volume id), and on it nothing but the image.
    await nas.stop();
    const disk = join(nas.work, 'disk.img');
    rmSync(disk, { force: true });
    rmSync(`${disk}.efivars`, { force: true });
    await formatDisk({ disk, imageDir: current.imageDir, firmware: 'uefi' });
    const esp = `${disk}@@1M`;
    const mtools = (cmd: string, args: string[]) => execa(cmd, ['-i', esp, ...args], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    await mtools('mdeltree', ['::/loader', '::/boot']);
    await mtools('mcopy', ['-o', uki, `::/${SD_BOOT_PATH}`]);
    adopted = startVm({ disk, sshPort: nas.sshPort, httpPort: nas.httpPort, serialLog: join(nas.work, 'serial-adopted.log') });
    await adopted.waitForSsh(10 * MINUTES);
    expect((await nas.running()).slot).toBeUndefined();

    const install = await nas.cli(['bootloader', 'install', '--repo', nas.repo, ...nas.reach()]);
    expect(install.code, install.stderr).toBe(0);
    expect(install.stdout).toMatch(/^nas booted with UEFI; adopted lts; systemd-boot installed; lts=adopted-[0-9a-f]{12}/);
    const uefiEntries = await entries();
    expect(uefiEntries).toEqual(['lts.conf']);
    expect(await nas.sh(`cat ${MEDIUM}/loader/entries/lts.conf`)).toMatch(/^efi \/boot\/ramboot\/[0-9a-f]{64}\.efi$/m);
    const back = await nas.reboot();
    expect(back.slot).toBe('lts');
    expect(back.cmdlineBuild).toMatch(/^adopted-[0-9a-f]{12}$/);

    const b = await nas.change({ 'root/etc/uefi-test': 'deployed onto the adopted medium\n' }, 'a change for the adopted medium');
    const r = await nas.deploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^promoted: build ${b.buildId} is the default; build adopted-[0-9a-f]{12} is kept as old`));
    expect(await nas.reboot()).toMatchObject({ slot: 'lts', build: b.buildId });
  }, 30 * MINUTES);
});
