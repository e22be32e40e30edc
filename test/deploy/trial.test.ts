import { chmod, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { AGENT_BIN, agentFiles } from '../../image/agent.js';
import { packagePath } from '../../lib/package.js';
import { confirmCommand } from '../../deploy/trial.js';

// The agent runs here under dash (Debian's /bin/sh) and busybox sh (Alpine's), with
// its paths pointed at a temporary directory and a PATH whose openrc-shutdown and
// reboot only write down that they were called: nothing here can reboot this machine.

const SHELLS: [string, string][] = [
  ['dash', '#!/bin/dash'],
  ['busybox sh', '#!/usr/bin/busybox sh'],
];

let dir: string;
let script: string;
let env: Record<string, string>;

async function setup(shebang: string, cmdline: string, conf: string): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), 'ramboot-trial-'));
  const bin = join(dir, 'bin');
  await mkdir(bin);
  for (const tool of ['cat', 'mkdir', 'mv', 'rm', 'sleep', 'sync']) await symlink(`/usr/bin/${tool}`, join(bin, tool)).catch(() => symlink(`/bin/${tool}`, join(bin, tool)));
  for (const fake of ['openrc-shutdown', 'reboot']) {
    await writeFile(join(bin, fake), `#!/bin/sh\necho "${fake} $*" >> '${dir}/rebooted'\n`, { mode: 0o755 });
  }
  const agent = agentFiles({ trial: { confirm_timeout: 600_000, reboot_deadline: 0, watchdog: false } }).find((f) => f.path === AGENT_BIN)!;
  script = join(dir, 'ramboot-trial');
  await writeFile(script, agent.data.toString().replace(/^#!.*\n/, `${shebang}\n`));
  await chmod(script, 0o755);
  await writeFile(join(dir, 'cmdline'), `${cmdline}\n`);
  await writeFile(join(dir, 'trial.conf'), conf);
  env = {
    PATH: bin,
    RAMBOOT_TRIAL_CONF: join(dir, 'trial.conf'),
    RAMBOOT_TRIAL_STATE: join(dir, 'run'),
    RAMBOOT_TRIAL_CMDLINE: join(dir, 'cmdline'),
    RAMBOOT_TRIAL_EFI: join(dir, 'efi'),
  };
}

const agent = (...args: string[]) => execa(script, args, { env, extendEnv: false, reject: false });
const exists = (p: string) => stat(p).then(
  () => true,
  () => false,
);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Alive and not a zombie (an exited loop waits for whatever init adopted it to reap it). */
const running = async (pid: number) => {
  const st = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return st !== undefined && st.slice(st.lastIndexOf(')') + 2)[0] !== 'Z';
};

afterEach(async () => {
  // The background loop of an expired trial sits in `sleep 120` after its fake reboot.
  const pid = await readFile(join(dir, 'run', 'agent.pid'), 'utf8').catch(() => undefined);
  if (pid && (await running(Number(pid)))) process.kill(Number(pid), 'SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe.each(SHELLS)('the trial agent under %s', (_shell, shebang) => {
  it('reboots a trial boot that is not confirmed in time', async () => {
    // Long enough that the first status is taken before it expires, even on a loaded machine.
    await setup(shebang, 'console=ttyS0 panic=10 ramboot.slot=new ramboot.build=abc', 'CONFIRM_TIMEOUT=3\n');
    expect((await agent('start')).exitCode).toBe(0);
    expect((await agent('status')).stdout).toMatch(/^trial=pending remaining=[0-3]$/);
    for (let i = 0; i < 100 && !(await exists(join(dir, 'rebooted'))); i++) await sleep(100);
    expect(await readFile(join(dir, 'rebooted'), 'utf8')).toBe('openrc-shutdown -r now\n');
    expect((await agent('status')).stdout).toBe('trial=expired');
    const late = await agent('confirm');
    expect(late.exitCode).toBe(1);
    expect(late.stderr).toMatch(/too late/);
  });

  it('does not reboot a confirmed trial, and its loop ends', async () => {
    await setup(shebang, 'ramboot.slot=new ramboot.build=abc', 'CONFIRM_TIMEOUT=1\n');
    await agent('start');
    const pid = Number(await readFile(join(dir, 'run', 'agent.pid'), 'utf8'));
    expect((await agent('confirm')).exitCode).toBe(0);
    expect((await agent('confirm')).exitCode).toBe(0);
    await sleep(2_500);
    expect(await exists(join(dir, 'rebooted'))).toBe(false);
    expect(await exists(join(dir, 'run', 'trial-confirmed'))).toBe(true);
    expect((await agent('status')).stdout).toBe('trial=confirmed');
    expect(await running(pid)).toBe(false);
  });

  it('does nothing on a boot that is not a trial, and refuses to confirm one', async () => {
    await setup(shebang, 'ramboot.slot=lts ramboot.build=abc xramboot.slot=new', 'CONFIRM_TIMEOUT=1\n');
    expect((await agent('start')).exitCode).toBe(0);
    expect(await exists(join(dir, 'run', 'agent.pid'))).toBe(false);
    expect((await agent('status')).stdout).toBe('trial=none');
    const r = await agent('confirm');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/not a trial boot/);
  });

  it('feeds the watchdog and disarms it on a clean stop', async () => {
    await setup(shebang, 'ramboot.slot=lts', `WATCHDOG=yes\nWATCHDOG_DEVICE=${'$RAMBOOT_TRIAL_STATE'}/../watchdog\n`);
    await agent('start');
    await sleep(1_500);
    expect((await readFile(join(dir, 'watchdog'), 'utf8')).length).toBeGreaterThanOrEqual(1);
    await agent('stop');
    await sleep(1_500);
    expect(await readFile(join(dir, 'watchdog'), 'utf8')).toMatch(/^\.+V$/);
  });

  it('rejects an unknown command', async () => {
    await setup(shebang, '', '');
    expect((await agent('frobnicate')).exitCode).toBe(2);
  });
});

describe('the agent on UEFI', () => {
  for (const [shell, shebang] of SHELLS) {
    it(`${shell}: confirm blesses the counted boot entry on the medium (new+0-1.conf becomes new.conf), as systemd-bless-boot does`, async () => {
      const medium = join(await mkdtemp(join(tmpdir(), 'ramboot-esp-')), 'usb');
      await mkdir(join(medium, 'loader', 'entries'), { recursive: true });
      await writeFile(join(medium, 'loader/entries/new+0-1.conf'), 'the trial entry\n');
      await writeFile(join(medium, 'loader/entries/lts.conf'), 'the default\n');
      await setup(shebang, 'ramboot.slot=new ramboot.build=abc', `CONFIRM_TIMEOUT=600\nMEDIUM='${medium}'\n`);
      await mkdir(join(dir, 'efi'));
      expect((await agent('start')).exitCode).toBe(0);
      expect((await agent('confirm')).exitCode).toBe(0);
      expect(await readFile(join(medium, 'loader/entries/new.conf'), 'utf8')).toBe('the trial entry\n');
      expect(await exists(join(medium, 'loader/entries/new+0-1.conf'))).toBe(false);
      expect(await exists(join(medium, 'loader/entries/lts.conf'))).toBe(true);
    });
  }

  it('on BIOS (no /sys/firmware/efi) confirm leaves the medium alone', async () => {
    const medium = join(await mkdtemp(join(tmpdir(), 'ramboot-esp-')), 'usb');
    await mkdir(join(medium, 'loader', 'entries'), { recursive: true });
    await writeFile(join(medium, 'loader/entries/new+0-1.conf'), 'x\n');
    await setup('#!/bin/dash', 'ramboot.slot=new ramboot.build=abc', `CONFIRM_TIMEOUT=600\nMEDIUM='${medium}'\n`);
    expect((await agent('start')).exitCode).toBe(0);
    expect((await agent('confirm')).exitCode).toBe(0);
    expect(await exists(join(medium, 'loader/entries/new+0-1.conf'))).toBe(true);
  });
});

describe('agentFiles', () => {
  it('returns the agent shipped in image/agent, its openrc link, and the configuration ramboot.yaml gives', async () => {
    const files = agentFiles({ trial: { confirm_timeout: 450_500, reboot_deadline: 600_000, watchdog: true, watchdog_module: 'i6300esb heartbeat=600' }, boot: { medium: '/media/usb' } }).slice(1);
    expect(files.map((f) => [f.path, f.type, f.mode.toString(8)])).toEqual([
      ['/usr/sbin/ramboot-trial', 'file', '755'],
      ['/etc/init.d/ramboot-trial', 'file', '755'],
      ['/etc/runlevels/boot/ramboot-trial', 'symlink', '777'],
      ['/etc/ramboot/trial.conf', 'file', '644'],
    ]);
    expect(files[0]!.data.equals(await readFile(packagePath('image/agent/ramboot-trial')))).toBe(true);
    expect(files[1]!.data.equals(await readFile(packagePath('image/agent/ramboot-trial.initd')))).toBe(true);
    expect(files[2]!.data.toString()).toBe('/etc/init.d/ramboot-trial');
    // 450.5 s rounds up: the agent must never fire before the controller's budget.
    expect(files[3]!.data.toString()).toBe(
      "# Written by ramboot from ramboot.yaml (trial.*, boot.medium); read by ramboot-trial and ramboot-early.\nCONFIRM_TIMEOUT=451\nWATCHDOG=1\nWATCHDOG_MODULE='i6300esb heartbeat=600'\nMEDIUM='/media/usb'\n",
    );
  });

  it('puts the openrc link in sysinit on Debian, where sysvinit never enters the boot runlevel', () => {
    const files = agentFiles({ trial: { confirm_timeout: 1000, reboot_deadline: 1000, watchdog: false }, distro: { name: 'debian' } });
    expect(files.find((f) => f.type === 'symlink')?.path).toBe('/etc/runlevels/sysinit/ramboot-trial');
  });

  it('parses as POSIX sh', async () => {
    for (const f of agentFiles({ trial: { confirm_timeout: 1, reboot_deadline: 1, watchdog: false } }).filter((f) => f.path !== '/etc/runlevels/boot/ramboot-trial' && /ramboot-(trial|early)/.test(f.path))) {
      await execa('dash', ['-n'], { input: f.data });
      await execa('busybox', ['sh', '-n'], { input: f.data });
    }
  });
});

describe('confirmCommand', () => {
  it('confirms only on the boot it names: another boot is refused, this one runs the agent, which confirms', async () => {
    await setup('#!/bin/dash', 'ramboot.slot=new ramboot.build=abc', 'CONFIRM_TIMEOUT=600\n');
    expect((await agent('start')).exitCode).toBe(0);
    const run = (cmd: string) => execa('/bin/sh', ['-c', cmd], { env: { ...env, PATH: `${env.PATH}:/usr/bin:/bin` }, extendEnv: false, reject: false });
    const other = await run(confirmCommand('00000000-0000-0000-0000-000000000000', script));
    expect(other.exitCode).toBe(97);
    expect((await agent('status')).stdout).toMatch(/^trial=pending /);
    const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    const same = await run(confirmCommand(bootId, script));
    expect(same.exitCode, same.stderr).toBe(0);
    expect((await agent('status')).stdout).toMatch(/^trial=confirmed/);
  });
});
