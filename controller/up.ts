import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from '../builder/build.js';
import { parseRelease } from '../image/release.js';
import { connect } from '../deploy/ssh.js';
import { loadTarget } from './verbs/deploy.js';
import { fingerprint } from '../secrets/store.js';
import { UsageError } from '../lib/errors.js';
import { logger } from '../lib/log.js';
import { formatDisk } from '../vm/format.js';
import { startVm } from '../vm/qemu.js';

// `ramboot up`: the main job for one machine. Builds the newest commit; with no host
// address configured, boots it on the virtual NAS, proves SSH with the pinned host key,
// and keeps the machine running until Ctrl-C.

export interface UpOptions {
  repoDir: string;
  stateDir: string;
  identity?: string;
  sshPort: number;
  httpPort: number;
}

const BOOT_DEADLINE_MS = 10 * 60_000;

export async function up(o: UpOptions): Promise<number> {
  const log = logger('up');
  const r = await build({ repoDir: o.repoDir, stateDir: o.stateDir, identity: o.identity });
  const { config, target } = await loadTarget({ repo: o.repoDir });
  if (config.host.address) {
    throw new UsageError(`failed to bring up ${config.host.name}: it has an address; use ramboot deploy --repo ${o.repoDir}`, { step: 'up' });
  }
  if (!r.manifest.hostKey) {
    throw new UsageError('failed to bring up the virtual NAS: the repository has no host key secret to pin (ramboot secrets add --generate ssh-ed25519)', {
      step: 'up',
    });
  }
  const vmDir = join(o.stateDir, 'vm');
  mkdirSync(vmDir, { recursive: true });
  const disk = join(vmDir, 'disk.img');
  await formatDisk({ disk, imageDir: r.imageDir });
  const vm = startVm({ disk, sshPort: o.sshPort, httpPort: o.httpPort, serialLog: join(vmDir, 'serial.log'), monitor: join(vmDir, 'monitor.sock') });
  process.once('SIGINT', () => void vm.stop());
  process.once('SIGTERM', () => void vm.stop());
  try {
    const ms = await vm.waitForSsh(BOOT_DEADLINE_MS);
    log.info({ seconds: ms / 1000 }, 'the virtual NAS answers SSH');
    const session = await connect({ ...target, address: '127.0.0.1', port: o.sshPort, hostKey: r.manifest.hostKey });
    const release = parseRelease((await session.exec('cat /etc/ramboot-release')).stdout);
    session.close();
    process.stdout.write(
      `${config.host.name} runs ${release.build} on the virtual NAS (host key ${fingerprint(r.manifest.hostKey)} pinned)\n` +
        `  ssh -p ${o.sshPort} -i ${target.identityFile} root@127.0.0.1\n` +
        `  status page: http://127.0.0.1:${o.httpPort}/\n` +
        `  serial console: ${join(vmDir, 'serial.log')}; Ctrl-C stops the machine\n`,
    );
  } catch (err) {
    await vm.stop();
    throw err;
  }
  const done = await vm.process;
  return existsSync(disk) ? (done.exitCode ?? 0) : 1;
}
