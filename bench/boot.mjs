// Boot times of the Debian example on the virtual NAS, in one run, under SeaBIOS
// (syslinux) and under OVMF (systemd-boot), each on a disk formatted for it from the same
// image: a cold start of qemu, a reboot from inside the guest (the virtual NAS starts a
// fresh qemu process on the same disk), and a power cycle; each to "Run /init" on the
// serial console and to the SSH banner of the new boot. Also the image's size. Figures
// are printed, not asserted.
// Usage: node bench/boot.mjs [--firmware bios|uefi]   (after scripts/setup.sh; as root;
// both firmwares unless one is named)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { requestReboot, waitUntil } from '../dist/deploy/reboot.js';
import { readRunning } from '../dist/deploy/running.js';
import { connect } from '../dist/deploy/ssh.js';
import { startVm } from '../dist/vm/qemu.js';
import { freePort } from './ports.mjs';

const { values } = parseArgs({ options: { firmware: { type: 'string' } } });
if (values.firmware && !['bios', 'uefi'].includes(values.firmware)) throw new Error(`--firmware must be bios or uefi, not ${values.firmware}`);
const firmwares = values.firmware ? [values.firmware] : ['bios', 'uefi'];

const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-boot-'));
const env = { ...process.env, HOME: join(root, 'home'), RAMBOOT_IDENTITY: '' };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const run = (...args) => execFileSync('node', [cli, ...args], { env, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
run('init', repo, '--distro', 'debian');
const built = JSON.parse(run('build', '--repo', repo, '--state', process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state', '--images', join(root, 'images'), '--json'));
const manifest = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8'));
const image = built.segments.reduce((n, s) => n + s.bytes, built.kernel.bytes);
const unpacked = manifest.files.reduce((n, f) => n + f.size, 0);

/** Seconds from t0 until "Run /init" appears in the serial log after `offset`. */
async function runInit(serialLog, t0, offset) {
  for (;;) {
    // qemu creates the log once it runs.
    const log = existsSync(serialLog) ? readFileSync(serialLog) : Buffer.alloc(0);
    if (log.subarray(offset).includes('Run /init as init process')) return (Date.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The three boots on a disk formatted for `firmware`: their times, the guest reboot's split, the qemu processes started. */
async function measure(firmware) {
  const disk = join(root, `disk-${firmware}.img`);
  run('format', '--disk', disk, '--image', built.imageDir, '--firmware', firmware);
  const sshPort = await freePort();
  const serialLog = join(root, `serial-${firmware}.log`);
  const target = { name: 'nas', address: '127.0.0.1', port: sshPort, user: 'root', identityFile: join(env.HOME, '.config/ramboot/id_ed25519'), hostKey: manifest.hostKey };

  /** Seconds from t0 to "Run /init" and to SSH answering on a boot other than `bootId`. */
  async function timeBoot(t0, offset, bootId) {
    const init = runInit(serialLog, t0, offset);
    const back = await waitUntil(target, 10 * 60_000, (r) => r.bootId !== bootId);
    if (!back.running) throw new Error(`no new boot (${firmware}): ${back.last.error}`);
    return { init: await init, ssh: (Date.now() - t0) / 1000 };
  }

  // When the guest's reset ended its qemu process and the fresh one started: splits a
  // guest reboot into the guest's shutdown and the boot that follows.
  let restartedAt = 0;
  const emit = (e) => { if (e.message.startsWith('the machine rebooted')) restartedAt = Date.now(); };
  const vm = startVm({ disk, sshPort, httpPort: await freePort(), serialLog, monitor: join(root, `monitor-${firmware}.sock`), emit });
  const rows = [];
  let split;
  try {
    rows.push(['cold start of qemu', await timeBoot(Date.now(), 0, '')]);
    for (const [name, cause] of [
      ['reboot from inside the guest', async () => {
        const s = await connect(target);
        await requestReboot(s);
        s.close();
      }],
      ['power cycle', () => vm.powerCycle()],
    ]) {
      const s = await connect(target);
      const { bootId } = await readRunning(s);
      s.close();
      const offset = statSync(serialLog).size;
      restartedAt = 0;
      const t0 = Date.now();
      await cause();
      const t = await timeBoot(t0, offset, bootId);
      rows.push([name, t]);
      if (restartedAt) split = { shutdown: (restartedAt - t0) / 1000, boot: t.ssh - (restartedAt - t0) / 1000 };
    }
  } finally {
    await vm.stop();
  }
  return { rows, split, processes: vm.boots() };
}

const results = {};
for (const firmware of firmwares) results[firmware] = await measure(firmware);

console.log(`Debian example: image ${(image / 2 ** 20).toFixed(1)} MiB (kernel + segments), ${(unpacked / 2 ** 20).toFixed(1)} MiB unpacked in RAM; qemu TCG, 1 vCPU`);
for (const [firmware, { rows, split, processes }] of Object.entries(results)) {
  console.log(`\n${firmware === 'uefi' ? 'UEFI (OVMF, systemd-boot)' : 'BIOS (SeaBIOS, syslinux)'}`);
  for (const [name, t] of rows) console.log(`${name.padEnd(30)} to "Run /init" ${t.init.toFixed(1).padStart(6)} s   to SSH ${t.ssh.toFixed(1).padStart(6)} s`);
  const cold = rows[0][1].ssh;
  console.log(`guest reboot to SSH / cold start to SSH: ${(rows[1][1].ssh / cold).toFixed(2)}x (goal ≤ 1.1x; the reboot includes the guest's shutdown)`);
  if (split) console.log(`guest reboot = shutdown ${split.shutdown.toFixed(1)} s (request → qemu exits) + boot ${split.boot.toFixed(1)} s (fresh qemu → SSH, ${(split.boot / cold).toFixed(2)}x the cold start)`);
  console.log(`qemu processes started: ${processes} (one per boot)`);
}
if (results.bios && results.uefi) {
  const ratio = (i) => (results.uefi.rows[i][1].ssh / results.bios.rows[i][1].ssh).toFixed(2);
  console.log(`\nUEFI / BIOS to SSH: cold start ${ratio(0)}x (goal ≤ 1.3x), guest reboot ${ratio(1)}x, power cycle ${ratio(2)}x`);
}
