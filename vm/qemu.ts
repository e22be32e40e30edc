import { execa, type ResultPromise } from 'execa';
import { createConnection } from 'node:net';
import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { RambootError, UsageError } from '../lib/errors.js';
import type { Emit, StageEvent, WarnEvent } from '../lib/events.js';
import { PRIVATE_FILE, appendPrivateFile } from '../lib/private-file.js';
import type { Firmware } from '../deploy/medium.js';
import { diskFirmware } from './format.js';
import { startTpm, tpmArgs, type RunningTpm } from './tpm.js';

// The virtual NAS: the disk made by `ramboot format` attached as a USB stick (as the
// reference NAS boots), SeaBIOS → syslinux or OVMF → systemd-boot (at the removable-media
// path) → the slot's kernel and segments, SSH and HTTP forwarded to loopback, the serial
// console in a log. TCG works everywhere.
//
// A reset inside a running qemu process boots several times slower under TCG than a
// fresh process on the same disk, so a guest reboot ends the process (reboot=shutdown)
// and the machine starts a new one at once: same disk (the boot-once flag lives on it),
// same ports, same monitor, the serial log appended. qemu says why it ended on QMP (its
// stdio): a guest that powered off stays off, as a real machine would.

export interface VmOptions {
  disk: string;
  sshPort: number;
  httpPort: number;
  serialLog: string;
  /** A unix socket for qemu's monitor: the network cable, the power state. */
  monitor?: string;
  /** A unix socket to type at the serial console through (its output still goes to serialLog). */
  serialSocket?: string;
  memoryMiB?: number;
  accel?: 'tcg' | 'kvm';
  /** The machine's firmware; by default the one the disk is laid out for (diskFirmware). */
  firmware?: Firmware;
  /** A TPM 2.0 (swtpm), its state kept beside the disk (vm/tpm.ts). */
  tpm?: boolean;
  emit?: Emit<VmEvent>;
}

export type VmEvent = StageEvent | WarnEvent;

export interface Vm {
  options: VmOptions;
  /** Boots so far: the first start, every guest reboot, every power cycle. */
  boots(): number;
  /** Resolves once the guest's sshd sends its banner; rejects at the deadline or when the machine stops. */
  waitForSsh(timeoutMs: number): Promise<number>;
  serial(): string;
  /** Power off and on, as a smart plug would: the qemu process is killed and a new one started. */
  powerCycle(): Promise<void>;
  /** Pulls (false) or plugs back (true) the network cable: the guest sees its link go down. */
  setLink(up: boolean): Promise<void>;
  stop(): Promise<void>;
  /** Settles when the machine is stopped for good: by stop(), or because qemu failed. */
  stopped: Promise<{ exitCode: number; reason: string }>;
}

/** Debian's OVMF (package ovmf): the firmware's code, and the empty variable store each UEFI machine starts from. */
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/** Where a UEFI machine's variable store (its NVRAM) lives: beside its disk, so it goes with it. */
export function varsPath(disk: string): string {
  return `${disk}.efivars`;
}

export function qemuArgs(o: VmOptions & { firmware: Firmware; tpmSocket?: string }): string[] {
  const fwd = `hostfwd=tcp:127.0.0.1:${o.sshPort}-:22,hostfwd=tcp:127.0.0.1:${o.httpPort}-:80`;
  return [
    // SeaBIOS is qemu's default; OVMF's 4M build (no SMM) runs on the default pc machine too.
    ...(o.firmware === 'uefi'
      ? ['-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${varsPath(o.disk)}`]
      : []),
    '-accel', o.accel ?? 'tcg',
    '-m', String(o.memoryMiB ?? 1536),
    '-smp', '1',
    '-display', 'none',
    '-no-reboot',
    '-qmp', 'stdio',
    '-chardev', o.serialSocket ? `socket,id=console,path=${o.serialSocket},server=on,wait=off,logfile=${o.serialLog},logappend=on` : `file,id=console,path=${o.serialLog},append=on`,
    '-serial', 'chardev:console',
    ...(o.monitor ? ['-monitor', `unix:${o.monitor},server,nowait`] : ['-monitor', 'none']),
    '-drive', `if=none,id=stick,format=raw,file=${o.disk}`,
    '-device', 'qemu-xhci,id=xhci',
    '-device', 'usb-storage,bus=xhci.0,drive=stick,bootindex=1',
    '-netdev', `user,id=net0,${fwd}`,
    '-device', 'e1000,netdev=net0',
    // A hardware watchdog, idle until the guest arms it (trial.watchdog_module "i6300esb …");
    // when it fires, the reset ends this process (-no-reboot) like a guest reboot does.
    '-device', 'i6300esb',
    '-action', 'watchdog=reset',
    ...(o.tpmSocket ? tpmArgs(o.tpmSocket) : []),
  ];
}

export function startVm(o: VmOptions): Vm {
  const emit = o.emit ?? (() => {});
  if (!existsSync(o.disk)) throw new UsageError(`failed to boot ${o.disk}: no such disk; make one with \`ramboot format --disk ${o.disk} --image DIR\``, { step: 'boot vm', input: o.disk });
  // qemu would create the serial log with the umask; the console shows what the machine
  // prints (a setup's output, a secret's name), so the log exists 0600 before qemu opens it.
  appendPrivateFile(o.serialLog, '');
  const firmware = o.firmware ?? diskFirmware(o.disk);
  if (firmware === 'uefi') ensureVarStore(o.disk);
  let proc: ResultPromise;
  let tpm: RunningTpm | undefined;
  let boots = 0;
  let startedAt = Date.now();
  let stopping = false;
  let cycling = false;
  let settle!: (r: { exitCode: number; reason: string }) => void;
  const stopped = new Promise<{ exitCode: number; reason: string }>((r) => (settle = r));

  const launch = () => {
    if (o.monitor) rmSync(o.monitor, { force: true });
    if (o.serialSocket) rmSync(o.serialSocket, { force: true });
    boots++;
    startedAt = Date.now();
    tpm?.stop();
    tpm = o.tpm ? startTpm(o.disk) : undefined;
    proc = execa('qemu-system-x86_64', qemuArgs({ ...o, firmware, tpmSocket: tpm?.socket }), { reject: false, stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
    const mine = proc;
    // Writing to the QMP pipe of a qemu that just exited fails; its exit is handled below.
    mine.stdin!.on('error', () => {});
    const why = shutdownReason(mine);
    void mine.then(async (r) => {
      if (mine !== proc || cycling) return;
      if (stopping) {
        tpm?.stop();
        return settle({ exitCode: 0, reason: 'stopped' });
      }
      const reason = await why;
      if (r.exitCode === 0 && reason === 'guest-shutdown') {
        tpm?.stop();
        emit({ kind: 'stage', source: 'vm', message: 'the machine powered off' });
        settle({ exitCode: 0, reason: 'the machine powered off' });
        return;
      }
      if (r.exitCode === 0) {
        // reboot=shutdown: the guest asked for a reset (a reboot, the trial agent, a panic).
        emit({ kind: 'stage', source: 'vm', message: 'the machine rebooted: starting a fresh qemu process on the same disk' });
        launch();
        return;
      }
      tpm?.stop();
      const failure = `qemu exited with ${r.exitCode ?? r.signal}: ${String(r.stderr ?? '').trim().split('\n').slice(-3).join(' ')}`;
      emit({ kind: 'warn', source: 'vm', message: failure });
      settle({ exitCode: r.exitCode ?? 1, reason: failure });
    });
  };
  launch();

  const kill = async () => {
    const p = proc;
    p.kill('SIGKILL');
    await p;
  };

  return {
    options: o,
    boots: () => boots,
    waitForSsh: async (timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      let stop: string | undefined;
      void stopped.then((r) => (stop = r.reason));
      while (Date.now() < deadline && stop === undefined) {
        if (await sshBanner(o.sshPort)) return Date.now() - startedAt;
        await new Promise((r) => setTimeout(r, 1000));
      }
      throw new RambootError(
        `failed to reach the virtual NAS: ${stop !== undefined ? `qemu stopped (${stop})` : `no SSH answer on 127.0.0.1:${o.sshPort} within ${timeoutMs / 1000} s`}; serial log ${o.serialLog}`,
        { step: 'boot vm', output: tail(o.serialLog) },
      );
    },
    serial: () => (existsSync(o.serialLog) ? readFileSync(o.serialLog, 'utf8') : ''),
    powerCycle: async () => {
      cycling = true;
      try {
        await kill();
      } finally {
        cycling = false;
      }
      if (!stopping) launch();
    },
    setLink: (up) => monitorCommand(o.monitor, `set_link net0 ${up ? 'on' : 'off'}`),
    stop: async () => {
      stopping = true;
      proc.kill('SIGTERM');
      await proc;
      tpm?.stop();
      settle({ exitCode: 0, reason: 'stopped' });
    },
    stopped,
  };
}

/**
 * The machine's own variable store, copied from OVMF's empty one on first use and kept
 * across reboots and power cycles (the fresh qemu process of each boot opens the same
 * file), as NVRAM would be. 0600 like the disk beside it: what the guest writes there is
 * its business. Written beside its final name, so a copy cut short is never used.
 */
function ensureVarStore(disk: string): void {
  const vars = varsPath(disk);
  if (existsSync(vars)) return;
  if (!existsSync(OVMF_CODE) || !existsSync(OVMF_VARS)) {
    throw new UsageError(`failed to boot ${disk} with UEFI: no OVMF at ${OVMF_CODE} and ${OVMF_VARS}; install ovmf (apt-get install ovmf, or run scripts/setup.sh)`, {
      step: 'boot vm',
      input: OVMF_CODE,
    });
  }
  const tmp = `${vars}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, 'wx', PRIVATE_FILE);
  try {
    writeFileSync(fd, readFileSync(OVMF_VARS));
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, vars);
}

/**
 * The reason of qemu's last SHUTDOWN event ("guest-reset", "guest-shutdown",
 * "host-signal"…), read from QMP on its stdio; undefined if it said none.
 */
function shutdownReason(p: ResultPromise): Promise<string | undefined> {
  return new Promise((resolve) => {
    let buf = '';
    let reason: string | undefined;
    p.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line.startsWith('{"QMP"')) p.stdin!.write('{"execute":"qmp_capabilities"}\n');
        try {
          const msg = JSON.parse(line) as { event?: string; data?: { reason?: string } };
          if (msg.event === 'SHUTDOWN') reason = msg.data?.reason;
        } catch {
          // Not a QMP message.
        }
      }
    });
    p.stdout!.on('close', () => resolve(reason));
  });
}

/** qemu's user network accepts TCP itself, so only an SSH banner proves the guest answers. */
export function sshBanner(port: number, timeoutMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.on('data', (d) => done(d.toString().startsWith('SSH-')));
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}

/**
 * Sends one command to qemu's human monitor and resolves once it ran. Input sent before
 * the monitor's first prompt, or left unread when the connection closes, can be lost,
 * so the command waits for a prompt and the connection for the one after it.
 */
export function monitorCommand(socket: string | undefined, cmd: string, timeoutMs = 10_000): Promise<void> {
  if (!socket) throw new RambootError(`failed to send \`${cmd}\` to the virtual NAS: started without a monitor socket`, { step: 'vm monitor' });
  return new Promise((resolve, reject) => {
    const s = createConnection(socket);
    let seen = '';
    let prompts = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new RambootError(`failed to run \`${cmd}\` on the virtual NAS's monitor: no prompt within ${timeoutMs / 1000} s`, { step: 'vm monitor', output: seen }));
    }, timeoutMs);
    s.on('data', (d) => {
      seen += d.toString('latin1');
      const count = seen.split('(qemu) ').length - 1;
      if (count > prompts && prompts === 0) s.write(`${cmd}\n`);
      prompts = count;
      if (prompts >= 2) s.end();
    });
    s.on('close', () => {
      clearTimeout(timer);
      if (prompts >= 2) resolve();
      else reject(new RambootError(`failed to run \`${cmd}\` on the virtual NAS's monitor: it closed the connection`, { step: 'vm monitor', output: seen }));
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(new RambootError(`failed to reach the virtual NAS's monitor ${socket}: ${err.message}`, { step: 'vm monitor' }, { cause: err }));
    });
  });
}

function tail(file: string): string {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-30).join('\n') : '';
}
