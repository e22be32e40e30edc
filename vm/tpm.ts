import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { UsageError, describe } from '../lib/errors.js';

// The virtual NAS's TPM 2.0: swtpm, its state beside the disk (DISK.tpm/), so that it
// survives reboots and power cycles and goes with the disk, as the chip goes with the
// board. Each qemu process gets a swtpm of its own on that state (--terminate: it ends
// when qemu lets go), as each boot gets a fresh qemu process (vm/qemu.ts).

export function tpmStatePath(disk: string): string {
  return `${disk}.tpm`;
}

export interface RunningTpm {
  /** swtpm's control socket, for qemu's `-chardev socket`. */
  socket: string;
  stop(): void;
}

/** Starts swtpm on the disk's TPM state; it is listening when this returns (--daemon forks once ready). */
export function startTpm(disk: string): RunningTpm {
  const state = tpmStatePath(disk);
  mkdirSync(state, { recursive: true, mode: 0o700 });
  // A unix socket path must fit in 108 bytes; the disk's directory may be deep.
  const base = join(tmpdir(), `ramboot-swtpm-${process.pid}-${randomBytes(4).toString('hex')}`);
  const socket = `${base}.sock`;
  const pidFile = `${base}.pid`;
  try {
    execFileSync(
      'swtpm',
      ['socket', '--tpm2', '--daemon', '--terminate', '--tpmstate', `dir=${state},mode=0600`, '--ctrl', `type=unixio,path=${socket},mode=0600`, '--pid', `file=${pidFile}`, '--log', `file=${state}/swtpm.log`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new UsageError(
      `failed to start the virtual NAS's TPM (swtpm on ${state}): ${missing ? 'swtpm is not installed; apt-get install swtpm, or run scripts/setup.sh' : describe(err)}`,
      { step: 'boot vm', input: state },
    );
  }
  return {
    socket,
    stop() {
      if (existsSync(pidFile)) stopProcess(Number(readFileSync(pidFile, 'utf8')));
      rmSync(pidFile, { force: true });
      rmSync(socket, { force: true });
    },
  };
}

/**
 * SIGTERM, then up to 5 s until it is gone: the next boot's swtpm opens the same state,
 * which swtpm locks. Synchronous, as the reboot that calls it starts qemu right after.
 */
function stopProcess(pid: number): void {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
      throw err;
    }
  };
  if (!alive()) return;
  process.kill(pid, 'SIGTERM');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 100 && alive(); i++) Atomics.wait(pause, 0, 0, 50);
}

export function tpmArgs(socket: string): string[] {
  return ['-chardev', `socket,id=chrtpm,path=${socket}`, '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-tis,tpmdev=tpm0'];
}
