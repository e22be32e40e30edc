import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Emit } from '../lib/events.js';
import { formatDisk } from '../vm/format.js';
import { startVm, type Vm, type VmEvent } from '../vm/qemu.js';
import { recordVm } from './machine.js';
import type { MachineState } from './state.js';

// The machine of `ramboot up` when ramboot.yaml names no host.address: the virtual NAS,
// whose disk lives in the machine's state directory and is kept across runs (formatted
// only on first use, so /media/usb/persist survives like on the real stick).

export interface VirtualNasOptions {
  state: MachineState;
  /** The image to format a new disk with; an existing disk boots what its labels say. */
  firstImage: string;
  sshPort: number;
  httpPort: number;
  emit: Emit<VmEvent>;
}

export interface VirtualNas {
  vm: Vm;
  disk: string;
  serialLog: string;
  formatted: boolean;
}

export async function startVirtualNas(o: VirtualNasOptions): Promise<VirtualNas> {
  mkdirSync(o.state.vm, { recursive: true });
  const disk = join(o.state.vm, 'disk.img');
  const serialLog = join(o.state.vm, 'serial.log');
  const monitor = join(o.state.vm, 'monitor.sock');
  const formatted = !existsSync(disk);
  if (formatted) {
    // Formatted beside its final name: a format cut short leaves no disk that looks made.
    const tmp = `${disk}.tmp`;
    rmSync(tmp, { force: true });
    await formatDisk({ disk: tmp, imageDir: o.firstImage, emit: o.emit });
    renameSync(tmp, disk);
  }
  const vm = startVm({ disk, sshPort: o.sshPort, httpPort: o.httpPort, serialLog, monitor, emit: o.emit });
  recordVm(o.state, { pid: process.pid, sshPort: o.sshPort, httpPort: o.httpPort, monitor, serialLog, disk });
  return { vm, disk, serialLog, formatted };
}
