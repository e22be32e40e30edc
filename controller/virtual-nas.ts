import { spawn } from 'node:child_process';
import { chmodSync, existsSync, openSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Emit } from '../lib/events.js';
import { RambootError } from '../lib/errors.js';
import { packagePath } from '../lib/package.js';
import { PRIVATE_FILE, makePrivateDir } from '../lib/private-file.js';
import { readManifest } from '../image/manifest.js';
import { formatDisk } from '../vm/format.js';
import { monitorCommand, sshBanner, type VmEvent } from '../vm/qemu.js';
import { recordVm, runningVm, type VmRecord } from './open-machine.js';
import type { MachineState } from './state.js';

// The machine of `ramboot up` when ramboot.yaml names no host.address: the virtual NAS.
// Its disk lives in the machine's state directory and is kept across runs (formatted
// only on first use, so /media/usb/persist survives like on the real stick). It runs in
// a process of its own (`ramboot vm`), so that, like a real machine, it keeps running
// when the controller dies, and the next `ramboot up` finds it again.

export interface VirtualNasOptions {
  state: MachineState;
  /** The image to format a new disk with; an existing disk boots what its labels say. */
  firstImage?: string;
  sshPort: number;
  httpPort: number;
  /** A TPM 2.0 (swtpm), its state beside the disk. */
  tpm?: boolean;
  emit: Emit<VmEvent>;
}

export interface VirtualNas {
  record: VmRecord;
  /** Resolves once the machine answers SSH; rejects at the deadline. */
  waitForSsh(timeoutMs: number): Promise<number>;
  /** Off and on, through qemu's monitor: the virtual NAS starts a fresh qemu process. */
  powerCycle(): Promise<void>;
  /** Stops the machine (Ctrl-C of `ramboot up`). */
  stop(): Promise<void>;
}

export async function startVirtualNas(o: VirtualNasOptions): Promise<VirtualNas> {
  // 0700: the disk holds the secrets segment, and qemu's monitor socket controls the machine.
  makePrivateDir(o.state.vm);
  const disk = join(o.state.vm, 'disk.img');
  const serialLog = join(o.state.vm, 'serial.log');
  const monitor = join(o.state.vm, 'monitor.sock');
  const serialSocket = join(o.state.vm, 'serial.sock');
  let record = runningVm(o.state);
  if (record) {
    o.emit({ kind: 'stage', source: 'vm', message: `the virtual NAS runs already (pid ${record.pid}, ssh port ${record.sshPort})` });
  } else {
    if (!existsSync(disk)) {
      if (!o.firstImage) throw new RambootError('failed to start the virtual NAS: it has no disk yet and no image to format one with', { step: 'start vm' });
      // Formatted beside its final name: a format cut short leaves no disk that looks made.
      rmSync(`${disk}.tmp`, { force: true });
      // The image's boot.firmware decides the layout; afterwards `ramboot vm` reads it from the disk.
      const firmware = (await readManifest(o.firstImage)).settings.boot.firmware ?? 'bios';
      await formatDisk({ disk: `${disk}.tmp`, imageDir: o.firstImage, firmware, emit: o.emit });
      renameSync(`${disk}.tmp`, disk);
    }
    // A disk made before ramboot made them private took the umask (0644 under 022).
    chmodSync(disk, PRIVATE_FILE);
    const log = openSync(join(o.state.vm, 'vm.log'), 'a', PRIVATE_FILE);
    const args = [packagePath('dist', 'controller', 'cli.js'), 'vm', '--disk', disk, '--ssh-port', String(o.sshPort), '--http-port', String(o.httpPort), '--serial-log', serialLog, '--monitor', monitor, '--serial-socket', serialSocket, ...(o.tpm ? ['--tpm'] : [])];
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', log, log] });
    child.unref();
    record = { pid: child.pid!, sshPort: o.sshPort, httpPort: o.httpPort, monitor, serialLog, serialSocket, disk };
    recordVm(o.state, record);
    o.emit({ kind: 'stage', source: 'vm', message: `booting the virtual NAS (pid ${child.pid}; serial console ${serialLog})` });
  }
  const rec = record;
  return {
    record: rec,
    async waitForSsh(timeoutMs) {
      const started = Date.now();
      while (Date.now() - started < timeoutMs) {
        if (await sshBanner(rec.sshPort)) return Date.now() - started;
        if (!runningVm(o.state)) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      throw new RambootError(`failed to reach the virtual NAS: no SSH answer on 127.0.0.1:${rec.sshPort} within ${timeoutMs / 1000} s; see ${rec.serialLog} and ${join(o.state.vm, 'vm.log')}`, { step: 'boot vm' });
    },
    powerCycle: () => monitorCommand(rec.monitor, 'system_reset'),
    async stop() {
      try {
        process.kill(rec.pid, 'SIGTERM');
      } catch {
        return;
      }
      for (let i = 0; i < 100 && runningVm(o.state); i++) await new Promise((r) => setTimeout(r, 100));
    },
  };
}
