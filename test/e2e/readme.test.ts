import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { armOnce, readSlots, writeCfg } from '../../deploy/medium.js';
import { requestReboot, waitUntil } from '../../deploy/reboot.js';
import { readRunning } from '../../deploy/running.js';
import { connect, type Session, type Target } from '../../deploy/ssh.js';
import { PACKAGE_ROOT } from '../../lib/package.js';
import { SHARED_STATE, ramboot, tempDir } from '../helpers/ramboot.js';

// The README's first command, as a new user runs it on a fresh machine: it installs what
// ramboot needs, makes a machine repository from the Debian example, builds it and boots
// it on the virtual NAS, and keeps it there. Then the machine as its user meets it: SSH
// with the host key pinned from the encrypted secret, the secrets root's alone, the status
// page, the serial console with root's password from its secret, and reboots that start a
// fresh qemu process and honour the boot-once slot, with the RNG seed kept on the medium.

const MINUTES = 60_000;

describe('the README\'s first command: ramboot up on the virtual NAS (Debian example)', () => {
  let up: ResultPromise;
  let output = '';
  let repo: string;
  let home: string;
  let stateDir: string;
  let target: Target;
  let session: Session;
  let vm: { sshPort: number; httpPort: number; serialSocket: string; serialLog: string; monitor: string };
  let buildId: string;

  const readme = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const command = /```sh\n(.*)\n/.exec(readme)![1]!;

  beforeAll(async () => {
    const dir = tempDir('readme');
    repo = join(dir, 'nas');
    home = join(dir, 'home');
    // The one change: another directory than /tmp/nas, so that a user's own is never touched.
    const line = command.replace('/tmp/nas', repo);
    expect(line).toBe(`sh scripts/setup.sh && node dist/controller/cli.js up --repo ${repo} --init debian`);
    up = execa('sh', ['-c', `mkdir -p ${home} && ${line}`], {
      cwd: PACKAGE_ROOT,
      reject: false,
      stdin: 'ignore',
      // A process group of its own: Ctrl-C at the end reaches `ramboot up` behind the shell.
      detached: true,
      // Its own HOME (the controller's keys), and the test run's package cache (the stage is built once per run).
      env: { ...process.env, HOME: home, RAMBOOT_IDENTITY: '', RAMBOOT_CACHE: join(SHARED_STATE, 'cache') },
    });
    up.stdout!.on('data', (d: Buffer) => (output += d));
    up.stderr!.on('data', (d: Buffer) => (output += d));
    const end = Date.now() + 20 * MINUTES;
    while (!/^ramboot controls nas from /m.test(output)) {
      if (up.exitCode !== null || Date.now() > end) throw new Error(`ramboot up did not come up:\n${output}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    stateDir = /^ {2}state: (\S+)$/m.exec(output)![1]!;
    expect(stateDir).toMatch(/^\/var\/lib\/ramboot\/nas-[0-9a-f]{8}$/);
    vm = JSON.parse(readFileSync(join(stateDir, 'vm', 'vm.json'), 'utf8'));
    buildId = readdirSync(join(stateDir, 'images')).find((n) => !n.startsWith('.'))!;
    const manifest = JSON.parse(readFileSync(join(stateDir, 'images', buildId, 'manifest.json'), 'utf8'));
    target = { name: 'nas', address: '127.0.0.1', port: vm.sshPort, user: 'root', identityFile: join(home, '.config/ramboot/id_ed25519'), hostKey: manifest.hostKey };
    session = await connect(target);
  }, 25 * MINUTES);

  afterAll(async () => {
    session?.close();
    if (up?.pid) process.kill(-up.pid, 'SIGINT');
    await up;
    // The virtual NAS runs in a process of its own: it stops once ramboot up has stopped it.
    const pid = stateDir && existsSync(join(stateDir, 'vm', 'vm.json')) ? JSON.parse(readFileSync(join(stateDir, 'vm', 'vm.json'), 'utf8')).pid : undefined;
    for (let i = 0; pid && i < 600 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
    // Its state is this test's own (keyed by the temporary repository's path): the disk goes with it.
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('prints how to reach the machine over SSH and its status page, and keeps state out of the repository', () => {
    expect(output).toMatch(new RegExp(`the virtual NAS: ssh -p ${vm.sshPort} -i ${home}/.config/ramboot/id_ed25519 root@127.0.0.1`));
    expect(output).toMatch(/status page: http:\/\/127\.0\.0\.1:8180\//);
    expect(existsSync(join(repo, '.ramboot'))).toBe(false);
  });

  it('is reached over SSH with the host key pinned from the encrypted host key secret', async () => {
    const pin = await ramboot(['secrets', 'hostkey', '--repo', repo], { HOME: home, RAMBOOT_IDENTITY: '' });
    expect(pin.exitCode, pin.stderr).toBe(0);
    const presented = (await session.exec('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key')).stdout;
    const fp = /SHA256:[A-Za-z0-9+/]+/.exec(presented)?.[0];
    expect(fp).toBeDefined();
    expect(pin.stdout).toContain(fp!);
  });

  it('runs the build it was given, from the lts slot', async () => {
    const r = await readRunning(session);
    expect(r).toMatchObject({ build: buildId, cmdlineBuild: buildId, slot: 'lts' });
  });

  it('keeps the secrets root\'s alone: the host key 0600, the medium mounted fmask=0177, the secrets segment 0600 on it', async () => {
    expect((await session.exec('stat -c "%a %u %g" /etc/ssh/ssh_host_ed25519_key')).stdout.trim()).toBe('600 0 0');
    const mount = (await session.exec("awk '$2 == \"/media/usb\"' /proc/mounts")).stdout;
    expect(mount).toMatch(/ vfat .*fmask=0177,dmask=0077/);
    const manifest = JSON.parse(readFileSync(join(stateDir, 'images', buildId, 'manifest.json'), 'utf8'));
    const secrets = manifest.segments.find((s: { name: string }) => s.name === 'secrets').sha256;
    expect((await session.exec(`stat -c %a /media/usb/boot/ramboot/${secrets}.cpio.zst`)).stdout.trim()).toBe('600');
  });

  it('serves its status page over the forwarded HTTP port', async () => {
    const body = await (await fetch(`http://127.0.0.1:${vm.httpPort}/release`)).text();
    expect(body).toContain(`build=${buildId}`);
    expect(body).toContain('ramboot.slot=lts');
  });

  it('lets root log in on the serial console with the password from its secret', async () => {
    const password = (
      await execa('age', ['-d', '-i', join(home, '.config/ramboot/identity.txt'), join(repo, 'secrets/etc/ramboot/passwords/root.age')])
    ).stdout.trim();
    expect(password.length).toBeGreaterThan(12);
    const transcript = await serialLogin(vm.serialSocket, 'root', password, 'echo "console-ok $(id -u)"');
    expect(transcript).toMatch(/console-ok 0/);
    expect(transcript).not.toContain(password);
  }, 5 * MINUTES);

  it('a reboot from inside the guest starts a fresh qemu process that honours the boot-once slot, then lts again; the RNG seed stays on the medium', async () => {
    const medium = '/media/usb';
    const slots = await readSlots(session, medium);
    // The same image under the `new` label too: the slot on the kernel command line says which label booted.
    await writeCfg(session, medium, { ...slots, new: slots.lts });
    await armOnce(session, medium, 'new');
    const seedBefore = (await session.exec('sha256sum /media/usb/persist/seedrng/seed.no-credit')).stdout.split(' ')[0];
    const reboot = async () => {
      const before = (await readRunning(session)).bootId;
      const qemu = await qemuPid(vm.serialLog);
      await requestReboot(session);
      session.close();
      const back = await waitUntil(target, 8 * MINUTES, (r) => r.bootId !== before);
      session = await connect(target);
      expect(await qemuPid(vm.serialLog), 'a new qemu process for the new boot').not.toBe(qemu);
      return back.running;
    };
    expect((await reboot())?.slot).toBe('new');
    expect((await reboot())?.slot).toBe('lts');
    await writeCfg(session, medium, slots);
    const seed = (await session.exec('stat -c "%a %s" /media/usb/persist/seedrng/seed.no-credit && sha256sum /media/usb/persist/seedrng/seed.no-credit')).stdout.split('\n');
    expect(seed[0]).toBe('600 512');
    // Mixed in and written anew at every boot and shutdown: a seed that is really used.
    expect(seed[1]!.split(' ')[0]).not.toBe(seedBefore);
  }, 20 * MINUTES);
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid of the qemu process that writes this serial log. */
async function qemuPid(serialLog: string): Promise<string> {
  const r = await execa('pgrep', ['-f', `qemu-system-x86_64 .*${serialLog}`], { reject: false });
  return r.stdout.trim();
}

/** Logs in at the serial console through its socket, runs one command, and returns what the console showed. */
function serialLogin(socket: string, user: string, password: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(socket);
    let seen = '';
    let step = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no shell on the serial console; it showed:\n${seen.slice(-2000)}`));
    }, 4 * MINUTES);
    // Until the getty shows its prompt, a newline now and then asks it again.
    const nudge = setInterval(() => step === 0 && s.write('\r'), 5_000);
    s.on('data', (d) => {
      seen += d.toString('latin1');
      if (step === 0 && /login: ?$/.test(seen)) {
        step = 1;
        s.write(`${user}\r`);
      } else if (step === 1 && /Password: ?$/.test(seen)) {
        step = 2;
        s.write(`${password}\r`);
      } else if (step === 2 && /# (\x1b\[\?2004h)?$/.test(seen)) {
        step = 3;
        s.write(`${command}; exit\r`);
      } else if (step === 3 && /console-ok \d+/.test(seen)) {
        clearTimeout(timer);
        clearInterval(nudge);
        s.end();
        resolve(seen);
      }
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      clearInterval(nudge);
      reject(err);
    });
  });
}
