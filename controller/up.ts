import { build } from '../builder/build.js';
import { deploy } from '../deploy/deploy.js';
import { Journal, acquireLock } from '../deploy/journal.js';
import { targetFor } from '../deploy/target.js';
import { fingerprint } from '../secrets/ssh-public.js';
import { UsageError } from '../lib/errors.js';
import { openMachine } from './machine.js';
import type { Renderer } from './render.js';
import { startVirtualNas } from './virtual-nas.js';
import { formatVerdict } from './verbs/deploy.js';

// `ramboot up`: the main job for one machine. Builds the newest commit; with no host
// address configured, boots the virtual NAS (its disk kept across runs) and brings it
// to that build through the trial boot, then keeps the machine running until Ctrl-C.

export interface UpOptions {
  repoDir: string;
  state?: string;
  identity?: string;
  sshPort: number;
  httpPort: number;
  render: Renderer;
}

const BOOT_DEADLINE_MS = 10 * 60_000;

export async function up(o: UpOptions): Promise<number> {
  const machine = await openMachine({ repo: o.repoDir, state: o.state });
  const emit = o.render.emit;
  if (machine.notice) process.stderr.write(`${machine.notice}\n`);
  if (machine.config.host.address) {
    throw new UsageError(`failed to bring up ${machine.config.host.name}: it has an address; use ramboot deploy --repo ${o.repoDir}`, { step: 'up' });
  }
  const built = await build({ repoDir: machine.repo, imagesDir: machine.state.images, cacheDir: machine.state.cache, origin: machine.origin, identity: o.identity, emit });
  const hostKey = built.manifest.hostKey;
  if (!hostKey) {
    throw new UsageError('failed to bring up the virtual NAS: the repository has no host key secret to pin (ramboot secrets add etc/ssh/ssh_host_ed25519_key --generate ssh-ed25519)', { step: 'up' });
  }
  const nas = await startVirtualNas({ state: machine.state, firstImage: built.imageDir, sshPort: o.sshPort, httpPort: o.httpPort, emit });
  const stop = () => void nas.vm.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const ms = await nas.vm.waitForSsh(BOOT_DEADLINE_MS);
    emit({ kind: 'stage', source: 'vm', message: `the virtual NAS answers SSH after ${(ms / 1000).toFixed(1)} s` });
    const target = targetFor(built.manifest.settings, { address: '127.0.0.1', port: o.sshPort, powerCycle: () => nas.vm.powerCycle() });
    const journal = await Journal.open(machine.state.dir);
    const release = acquireLock(machine.state.dir, target.name);
    try {
      const known = [journal.lastPromotedHostKey()].filter((k): k is string => !!k);
      const r = await deploy({ target, journal, imageDir: built.imageDir, manifest: built.manifest, previousHostKeys: known, onEvent: emit });
      o.render.end();
      process.stdout.write(`${formatVerdict(r)}\n`);
    } finally {
      release();
    }
    process.stdout.write(
      `${target.name} runs on the virtual NAS (host key ${fingerprint(hostKey)} pinned)\n` +
        `  ssh -p ${o.sshPort} -i ${target.identityFile} root@127.0.0.1\n` +
        `  status page: http://127.0.0.1:${o.httpPort}/\n` +
        `  serial console: ${nas.serialLog}; Ctrl-C stops the machine\n`,
    );
  } catch (err) {
    await nas.vm.stop();
    throw err;
  }
  return (await nas.vm.stopped).exitCode;
}
