import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { armOnce, readSlots, writeCfg } from '../../deploy/medium.js';
import { requestReboot, waitUntil } from '../../deploy/reboot.js';
import { readRunning } from '../../deploy/running.js';
import { connect, type Session, type Target } from '../../deploy/ssh.js';
import { startVm, type Vm } from '../../vm/qemu.js';
import { buildRepo, freePort, initRepo, ramboot, tempDir, type Built } from '../helpers/ramboot.js';

// The Debian example end to end: `ramboot init`, build, format, boot on the virtual
// NAS (real kernel, real syslinux, USB stick), then reach it as a user would.

describe('the Debian example on the virtual NAS', () => {
  let vm: Vm;
  let built: Built;
  let session: Session;
  let hostKey: string;
  let httpPort: number;
  let env: Record<string, string>;
  let repo: string;
  let target: Target;

  beforeAll(async () => {
    ({ repo, env } = await initRepo('debian'));
    const work = tempDir('debian');
    built = await buildRepo(repo, join(work, 'images'), env);
    const disk = join(work, 'disk.img');
    const f = await ramboot(['format', '--disk', disk, '--image', built.imageDir], env);
    expect(f.exitCode, f.stderr).toBe(0);
    const sshPort = await freePort();
    httpPort = await freePort();
    vm = startVm({ disk, sshPort, httpPort, serialLog: join(work, 'serial.log') });
    await vm.waitForSsh(8 * 60_000);
    hostKey = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8')).hostKey;
    target = { name: 'nas', address: '127.0.0.1', port: sshPort, user: 'root', identityFile: join(env.HOME!, '.config/ramboot/id_ed25519'), hostKey };
    session = await connect(target);
  });

  afterAll(async () => {
    session?.close();
    await vm?.stop();
  });

  it('is reached over SSH with the host key pinned from the encrypted host key secret', async () => {
    const pin = await ramboot(['secrets', 'hostkey', '--repo', repo], env);
    expect(pin.exitCode, pin.stderr).toBe(0);
    const presented = (await session.exec('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null || ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key')).stdout;
    const fp = /SHA256:[A-Za-z0-9+/]+/.exec(presented)?.[0];
    expect(fp).toBeDefined();
    expect(pin.stdout).toContain(fp!);
    expect(hostKey).toMatch(/^ssh-ed25519 /);
  });

  it('runs the build it was given, from the lts slot', async () => {
    const release = (await session.exec('cat /etc/ramboot-release')).stdout;
    expect(release).toContain(`build=${built.buildId}`);
    const cmdline = (await session.exec('cat /proc/cmdline')).stdout;
    expect(cmdline).toContain('ramboot.slot=lts');
    expect(cmdline).toContain(`ramboot.build=${built.buildId}`);
  });

  it('keeps the secrets private: the host key is 0600 root', async () => {
    const st = (await session.exec('stat -c "%a %u %g" /etc/ssh/ssh_host_ed25519_key')).stdout.trim();
    expect(st).toBe('600 0 0');
  });

  it('serves the status page over the forwarded HTTP port', async () => {
    const res = await fetch(`http://127.0.0.1:${httpPort}/release`);
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(body).toContain(`build=${built.buildId}`);
    expect(body).toContain('ramboot.slot=lts');
  });

  it('a reboot from inside the guest starts a fresh qemu process that honours the boot-once slot, then lts again', async () => {
    const medium = '/media/usb';
    const slots = await readSlots(session, medium);
    // The same image under the `new` label too: the slot on the kernel command line tells which label booted.
    await writeCfg(session, medium, { ...slots, new: slots.lts });
    await armOnce(session, medium, 'new');
    const reboot = async (label: string) => {
      const before = (await readRunning(session)).bootId;
      const boots = vm.boots();
      await requestReboot(session);
      session.close();
      const t = Date.now();
      const back = await waitUntil(target, 6 * 60_000, (r) => r.bootId !== before);
      console.log(`guest reboot into ${label}: SSH again after ${Math.round((Date.now() - t) / 1000)} s`);
      session = await connect(target);
      expect(vm.boots(), 'a new qemu process per reboot').toBe(boots + 1);
      return back.running;
    };
    expect((await reboot('new'))?.slot).toBe('new');
    expect((await reboot('lts'))?.slot).toBe('lts');
    await writeCfg(session, medium, slots);
  }, 20 * 60_000);
});
