// Boot time of the Debian example on the virtual NAS: to SSH answering, to the status page.
// Usage: node bench/boot.mjs   (after scripts/setup.sh; as root)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startVm } from '../dist/vm/qemu.js';

const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-boot-'));
const env = { ...process.env, HOME: join(root, 'home') };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const run = (...args) => execFileSync('node', [cli, ...args], { env, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
run('init', repo, '--distro', 'debian');
const built = JSON.parse(run('build', '--repo', repo, '--state', process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state', '--images', join(root, 'images'), '--json'));
const disk = join(root, 'disk.img');
run('format', '--disk', disk, '--image', built.imageDir);
const image = built.segments.reduce((n, s) => n + s.bytes, built.kernel.bytes);
const vm = startVm({ disk, sshPort: 2322, httpPort: 2380, serialLog: join(root, 'serial.log') });
const t = Date.now();
const ssh = await vm.waitForSsh(10 * 60_000);
let http;
while (!http) {
  http = await fetch('http://127.0.0.1:2380/release').then((r) => (r.ok ? Date.now() - t : undefined), () => undefined);
  if (!http) await new Promise((r) => setTimeout(r, 500));
}
console.log(`image ${(image / 2 ** 20).toFixed(1)} MiB (kernel + segments), qemu TCG, 1 vCPU`);
console.log(`power-on to SSH answering: ${(ssh / 1000).toFixed(1)} s; to status page: ${(http / 1000).toFixed(1)} s`);
await vm.stop();
