import { startVm, type VmOptions } from '../../../vm/qemu.js';
import type { Renderer } from '../../render.js';

const BOOT_DEADLINE_MS = 10 * 60_000;

/** `ramboot vm`: boots the disk in the foreground, says when the machine answers, runs until Ctrl-C. */
export async function runVm(o: Omit<VmOptions, 'emit'>, r: Renderer, stdout: NodeJS.WritableStream): Promise<number> {
  const vm = startVm({ ...o, emit: r.emit });
  const stop = () => void vm.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  r.emit({ kind: 'stage', source: 'vm', message: `booting ${o.disk} (serial console in ${o.serialLog}, ${o.accel ?? 'tcg'})` });
  try {
    const ms = await vm.waitForSsh(BOOT_DEADLINE_MS);
    stdout.write(`the virtual NAS answers after ${(ms / 1000).toFixed(1)} s: ssh -p ${o.sshPort} root@127.0.0.1, status page http://127.0.0.1:${o.httpPort}/ (Ctrl-C stops it)\n`);
  } catch (err) {
    await vm.stop();
    throw err;
  }
  return (await vm.stopped).exitCode;
}
