import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Session } from '../../deploy/ssh.js';
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
    session = await connect({ name: 'nas', address: '127.0.0.1', port: sshPort, user: 'root', identityFile: join(env.HOME!, '.config/ramboot/id_ed25519'), hostKey });
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
});
