import { execa, type ResultPromise } from 'execa';
import { createConnection } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { RambootError } from '../lib/errors.js';

// The virtual NAS: the disk made by `ramboot format` attached as a USB stick (as the
// reference NAS boots), SeaBIOS → syslinux → the slot's kernel and segments, SSH and
// HTTP forwarded to loopback, the serial console in a log. TCG works everywhere.

export interface VmOptions {
  disk: string;
  sshPort: number;
  httpPort: number;
  serialLog: string;
  /** A unix socket for qemu's monitor: power-cycling the machine from outside. */
  monitor?: string;
  memoryMiB?: number;
  accel?: 'tcg' | 'kvm';
}

export interface Vm {
  process: ResultPromise;
  options: VmOptions;
  /** Resolves once the guest's sshd sends its banner; rejects at the deadline. */
  waitForSsh(timeoutMs: number): Promise<number>;
  serial(): string;
  /** A hard reset, as a smart plug would do it. */
  powerCycle(): Promise<void>;
  /** Pulls (false) or plugs back (true) the network cable: the guest sees its link go down. */
  setLink(up: boolean): Promise<void>;
  stop(): Promise<void>;
}

export function qemuArgs(o: VmOptions): string[] {
  const fwd = `hostfwd=tcp:127.0.0.1:${o.sshPort}-:22,hostfwd=tcp:127.0.0.1:${o.httpPort}-:80`;
  return [
    '-accel', o.accel ?? 'tcg',
    '-m', String(o.memoryMiB ?? 1536),
    '-smp', '1',
    '-display', 'none',
    '-serial', `file:${o.serialLog}`,
    ...(o.monitor ? ['-monitor', `unix:${o.monitor},server,nowait`] : ['-monitor', 'none']),
    '-drive', `if=none,id=stick,format=raw,file=${o.disk}`,
    '-device', 'qemu-xhci,id=xhci',
    '-device', 'usb-storage,bus=xhci.0,drive=stick,bootindex=1',
    '-netdev', `user,id=net0,${fwd}`,
    '-device', 'e1000,netdev=net0',
  ];
}

export function startVm(o: VmOptions): Vm {
  const proc = execa('qemu-system-x86_64', qemuArgs(o), { reject: false, stdin: 'ignore', all: true });
  const started = Date.now();
  return {
    process: proc,
    options: o,
    waitForSsh: async (timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (proc.exitCode !== null) break;
        if (await sshBanner(o.sshPort)) return Date.now() - started;
        await new Promise((r) => setTimeout(r, 1000));
      }
      throw new RambootError(`failed to reach the virtual NAS: no SSH answer on 127.0.0.1:${o.sshPort} within ${timeoutMs / 1000} s; serial log ${o.serialLog}`, {
        step: 'boot vm',
        output: tail(o.serialLog),
      });
    },
    serial: () => (existsSync(o.serialLog) ? readFileSync(o.serialLog, 'utf8') : ''),
    powerCycle: () => monitorCommand(o, 'system_reset'),
    setLink: (up) => monitorCommand(o, `set_link net0 ${up ? 'on' : 'off'}`),
    stop: async () => {
      proc.kill('SIGTERM');
      await proc;
    },
  };
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
function monitorCommand(o: VmOptions, cmd: string, timeoutMs = 10_000): Promise<void> {
  if (!o.monitor) throw new RambootError(`failed to send \`${cmd}\` to the virtual NAS: started without a monitor socket`, { step: 'vm monitor' });
  return new Promise((resolve, reject) => {
    const s = createConnection(o.monitor!);
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
      reject(new RambootError(`failed to reach the virtual NAS's monitor ${o.monitor}: ${err.message}`, { step: 'vm monitor' }, { cause: err }));
    });
  });
}

function tail(file: string): string {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-30).join('\n') : '';
}
