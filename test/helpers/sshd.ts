import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Target } from '../../deploy/ssh.js';
import { freePort } from './ramboot.js';

// A real OpenSSH server on a loopback port, standing in for the NAS in integration
// tests. Commands run as root on THIS machine, so the PATH of every session starts
// with shims that refuse to reboot or power off: no test can take the host down.

export interface TestSshd {
  port: number;
  dir: string;
  /** The server's public host key line. */
  hostKey: string;
  /** A key the server does not have: pin it to test a host key mismatch. */
  otherHostKey: string;
  clientKey: string;
  /** Everything sshd logged so far (-e: to stderr). */
  log(): string;
  target(overrides?: Partial<Target>): Target;
  stop(): Promise<void>;
}

export interface SshdOptions {
  /** Programs left out of the sessions' PATH (e.g. "extlinux"). */
  without?: string[];
  /** Stand-in programs put first on the sessions' PATH: name → shell script. */
  programs?: Record<string, string>;
  /** sshd's host key: this private key file instead of one made for the server. */
  hostKeyFile?: string;
  /** sshd's Banner file: sent before authentication. */
  banner?: string;
}

const REFUSED = ['reboot', 'openrc-shutdown', 'shutdown', 'poweroff', 'halt', 'init', 'telinit', 'systemctl'];

export async function startSshd(opts: SshdOptions = {}): Promise<TestSshd> {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-sshd-'));
  await keygen(join(dir, 'host_ed25519'));
  await keygen(join(dir, 'other_host_ed25519'));
  await keygen(join(dir, 'client_ed25519'));
  const path = await sessionPath(dir, opts.without ?? [], opts.programs ?? {});
  const clientPub = (await readFile(join(dir, 'client_ed25519.pub'), 'utf8')).trim();
  await writeFile(join(dir, 'authorized_keys'), `environment="PATH=${path}" ${clientPub}\n`);
  const port = await freePort();
  await writeFile(
    join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${opts.hostKeyFile ?? join(dir, 'host_ed25519')}`,
      ...(opts.banner ? [`Banner ${opts.banner}`] : []),
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin yes',
      'PermitUserEnvironment PATH',
      'StrictModes no',
      'UsePAM no',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  // sshd refuses to start without its privilege separation directory.
  await mkdir('/run/sshd', { recursive: true });
  const proc = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await listening(proc, () => log, port);
  const hostKey = (await readFile(`${opts.hostKeyFile ?? join(dir, 'host_ed25519')}.pub`, 'utf8')).trim();
  const otherHostKey = (await readFile(join(dir, 'other_host_ed25519.pub'), 'utf8')).trim();
  return {
    port,
    dir,
    hostKey,
    otherHostKey,
    clientKey: join(dir, 'client_ed25519'),
    log: () => log,
    target: (overrides = {}) => ({
      name: 'nas',
      address: '127.0.0.1',
      port,
      user: 'root',
      identityFile: join(dir, 'client_ed25519'),
      hostKey,
      ...overrides,
    }),
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function keygen(file: string): Promise<void> {
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-test', '-f', file]);
}

/** A directory of refusing shims first, then links to every program of the system's bin directories but `without`. */
async function sessionPath(dir: string, without: string[], programs: Record<string, string>): Promise<string> {
  const shims = join(dir, 'shims');
  await mkdir(shims);
  for (const [name, script] of Object.entries(programs)) {
    await writeFile(join(shims, name), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  }
  for (const name of REFUSED) {
    await writeFile(join(shims, name), `#!/bin/sh\necho "${name}: refused by the test sshd" >&2\nexit 99\n`, { mode: 0o755 });
  }
  if (without.length === 0) return `${shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;
  const bin = join(dir, 'bin');
  await mkdir(bin);
  for (const d of ['/usr/sbin', '/usr/bin']) {
    for (const name of await readdir(d)) {
      if (without.includes(name) || REFUSED.includes(name)) continue;
      await symlink(join(d, name), join(bin, name)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
  }
  return `${shims}:${bin}`;
}

async function listening(proc: ChildProcess, log: () => string, port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!log().includes(`Server listening on 127.0.0.1 port ${port}`)) {
    if (proc.exitCode !== null) throw new Error(`sshd exited with ${proc.exitCode}:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`sshd did not listen within 10 s:\n${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The stand-in NAS's boot medium: real mounts on this machine (tests run as root).
// ext2 rather than FAT because this kernel has no vfat; extlinux supports both.

export interface TestMount {
  dir: string;
  unmount(): Promise<void>;
}

export async function mountExt2(sizeMiB: number): Promise<TestMount> {
  const base = await mkdtemp(join(tmpdir(), 'ramboot-medium-'));
  const img = join(base, 'medium.img');
  const dir = join(base, 'usb');
  await mkdir(dir);
  await execa('truncate', ['-s', `${sizeMiB}M`, img]);
  await execa('mkfs.ext2', ['-q', '-F', img]);
  await execa('mount', ['-o', 'loop', img, dir]);
  return { dir, unmount: () => unmountAndRemove(dir, base) };
}

export async function mountTmpfs(sizeKiB: number): Promise<TestMount> {
  const base = await mkdtemp(join(tmpdir(), 'ramboot-medium-'));
  const dir = join(base, 'usb');
  await mkdir(dir);
  await execa('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k`, 'tmpfs', dir]);
  return { dir, unmount: () => unmountAndRemove(dir, base) };
}

/** A read-only bind mount of a fresh directory. */
export async function mountReadOnly(): Promise<TestMount> {
  const base = await mkdtemp(join(tmpdir(), 'ramboot-medium-'));
  const src = join(base, 'src');
  const dir = join(base, 'usb');
  await mkdir(src);
  await mkdir(dir);
  await execa('mount', ['--bind', src, dir]);
  await execa('mount', ['-o', 'remount,bind,ro', dir]);
  return { dir, unmount: () => unmountAndRemove(dir, base) };
}

async function unmountAndRemove(dir: string, base: string): Promise<void> {
  await execa('umount', [dir]);
  await rm(base, { recursive: true, force: true });
}
