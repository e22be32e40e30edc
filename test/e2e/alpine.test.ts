import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MEDIUM, startNas, type VirtualNas } from '../helpers/nas.js';
import type { Built } from '../helpers/ramboot.js';

// The reference NAS's own distribution with its own init, end to end: the repository
// `ramboot init` makes by default (the Alpine template: openrc-init as PID 1, openrc's
// runlevels from its setup.sh, OpenSSH, the trial agent), built from the minirootfs
// fixture and local stand-ins for the Alpine mirror (openrc and OpenSSH compiled here for
// musl, Debian's kernel; helpers/alpine-standins.ts), with no Alpine server, on the virtual
// NAS under OVMF with systemd-boot, as the reference NAS now boots. One machine; each
// `it` leaves it running a known build from `lts`.

const MINUTES = 60_000;

describe('the Alpine template on the virtual NAS (UEFI), its packages from local stand-ins for the Alpine mirror built from source', () => {
  let nas: VirtualNas;
  let current: Built;

  beforeAll(async () => {
    nas = await startNas('alpine e2e', { firmware: 'uefi', distro: 'alpine' });
    current = nas.first;
  }, 25 * MINUTES);

  afterAll(async () => {
    await nas?.stop();
  });

  it('boots with openrc-init as PID 1, every service of the runlevels setup.sh chose started (sshd and the trial agent among them), the medium mounted', async () => {
    expect(await nas.running()).toMatchObject({ slot: 'lts', build: current.buildId });
    expect(await nas.sh('readlink /proc/1/exe')).toBe('/sbin/openrc-init\n');
    expect((await nas.sh('cat /etc/alpine-release')).trim()).toBe('3.20.3');
    // rc-status lists each runlevel under "Runlevel: NAME", a service per line with its state.
    const states = new Map<string, string>();
    let level = '';
    for (const line of (await nas.sh('rc-status --all --nocolor')).split('\n')) {
      const header = /^(?:Dynamic )?Runlevel: (.+)$/.exec(line);
      if (header) level = header[1]!;
      const svc = /^\s*(\S+)\s+\[\s*(\w+)/.exec(line);
      if (svc && ['sysinit', 'boot', 'default'].includes(level)) states.set(svc[1]!, svc[2]!);
    }
    for (const s of ['medium', 'localmount', 'networking', 'seedrng', 'passwords', 'ramboot-trial', 'sshd', 'monitor', 'agetty.ttyS0']) expect(states.get(s), s).toBe('started');
    expect([...states].filter(([, state]) => state !== 'started'), 'services not started').toEqual([]);
    expect(await nas.sh('ssh -V 2>&1')).toMatch(/^OpenSSH_9\.2p1/);
    expect(await nas.sh(`grep ' ${MEDIUM} ' /proc/mounts`)).toMatch(/ vfat /);
    // seedrng keeps its seed on the medium, in a directory the template's conf.d makes.
    expect(await nas.sh(`ls ${MEDIUM}/persist/seedrng`)).toMatch(/^seed\./);
  });

  it('trial-boots a healthy commit, the agent confirms it, and it is promoted to lts', async () => {
    const b = await nas.change({ 'root/etc/motd': 'promoted on Alpine with openrc\n' }, 'a healthy change on Alpine');
    const r = await nas.deploy(b.imageDir);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/^promoted: /);
    expect(nas.boots().at(-1)).toBe(`new ${b.buildId}`);
    expect(await nas.sh('cat /etc/motd')).toBe('promoted on Alpine with openrc\n');
    expect((await nas.slots()).lts?.buildId).toBe(b.buildId);
    expect(await nas.reboot()).toMatchObject({ slot: 'lts', build: b.buildId });
    current = b;
  }, 20 * MINUTES);

  it('rolls back a commit whose health check fails: the machine comes back on the last good build, and stays there', async () => {
    nas.settings({ checks: [{ name: 'always fails', cmd: 'echo "the pool is degraded"; false', retries: 0 }] });
    const bad = await nas.change({ 'root/etc/motd': 'unhealthy\n' }, 'an unhealthy commit on Alpine');
    const bootsBefore = nas.boots().length;
    const r = await nas.deploy(bad.imageDir);
    expect(r.code, r.stdout).toBe(12);
    expect(r.stdout).toMatch(/health check "always fails" failed after 1 attempt: exit 1: the pool is degraded/);
    expect(nas.boots().slice(bootsBefore)).toEqual([`new ${bad.buildId}`, `lts ${current.buildId}`]);
    expect(await nas.running()).toMatchObject({ slot: 'lts', build: current.buildId });
    expect(await nas.sh('cat /etc/motd')).toBe('promoted on Alpine with openrc\n');
    expect(await nas.reboot()).toMatchObject({ slot: 'lts', build: current.buildId });
    nas.settings();
  }, 20 * MINUTES);
});
