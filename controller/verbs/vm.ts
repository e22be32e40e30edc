import { logger } from '../../lib/log.js';
import { startVm, type VmOptions } from '../../vm/qemu.js';

const BOOT_DEADLINE_MS = 10 * 60_000;

/** `ramboot vm`: boots the disk in the foreground and says when the machine answers. */
export async function runVm(o: VmOptions): Promise<number> {
  const log = logger('vm');
  const vm = startVm(o);
  const stop = () => void vm.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  log.info({ disk: o.disk, serialLog: o.serialLog, accel: o.accel ?? 'tcg' }, 'booting the virtual NAS');
  try {
    const ms = await vm.waitForSsh(BOOT_DEADLINE_MS);
    process.stdout.write(
      `the virtual NAS answers after ${(ms / 1000).toFixed(1)} s: ssh -p ${o.sshPort} root@127.0.0.1, status page http://127.0.0.1:${o.httpPort}/ (Ctrl-C stops it)\n`,
    );
  } catch (err) {
    await vm.stop();
    throw err;
  }
  const r = await vm.process;
  return r.exitCode ?? 0;
}
