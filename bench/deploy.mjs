// From `ramboot deploy` to promoted on the virtual NAS (Debian example), for a root/-only
// change and for a package change: time split into upload, reboot, health; bytes sent
// against the image size. Times come from the deploy's own step events.
// Usage: node bench/deploy.mjs   (after scripts/setup.sh and `npx tsc -p .`; as root)
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { readManifest } from '../dist/image/manifest.js';
import { targetFor } from '../dist/deploy/target.js';
import { deploy } from '../dist/deploy/deploy.js';
import { Journal } from '../dist/deploy/journal.js';
import { startVm } from '../dist/vm/qemu.js';
import { freePort } from './ports.mjs';


const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-deploy-'));
const env = { ...process.env, HOME: join(root, 'home'), RAMBOOT_IDENTITY: '' };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const images = join(root, 'images');
const state = process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state';
const run = (...args) => execFileSync('node', [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const git = (...args) => execFileSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid', ...args], { cwd: repo, stdio: 'ignore' });
const build = () => JSON.parse(run('build', '--repo', repo, '--state', state, '--images', images, '--json'));

const sshPort = await freePort();
const httpPort = await freePort();
run('init', repo, '--distro', 'debian');
const cfg = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
cfg.trial = { confirm_timeout: '5m', reboot_deadline: '6m' };
cfg.health = { deadline: '3m', checks: [{ name: 'status page', http: `http://127.0.0.1:${httpPort}/release`, body: 'ramboot.slot=new' }] };
writeFileSync(join(repo, 'ramboot.yaml'), stringify(cfg));
git('add', '-A');
git('commit', '-q', '-m', 'bench settings');
const first = build();
const disk = join(root, 'disk.img');
run('format', '--disk', disk, '--image', first.imageDir);
const vm = startVm({ disk, sshPort, httpPort, serialLog: join(root, 'serial.log') });
await vm.waitForSsh(10 * 60_000);

async function timedDeploy(imageDir) {
  const manifest = await readManifest(imageDir);
  const target = targetFor(manifest.settings, { address: '127.0.0.1', port: sshPort });
  const journal = await Journal.open(join(root, 'state'));
  const at = {};
  const t0 = Date.now();
  const result = await deploy({
    target,
    journal,
    imageDir,
    manifest,
    onEvent: (e) => {
      if (e.kind === 'step' && !(e.step in at)) at[e.step] = Date.now();
      if (e.kind === 'verdict') at.verdict = Date.now();
    },
  });
  const span = (a, b) => (at[a] && at[b] ? ((at[b] - at[a]) / 1000).toFixed(1) : '?');
  return {
    verdict: result.outcome.verdict,
    total: ((at.verdict - t0) / 1000).toFixed(1),
    preflight: span('start', 'upload'),
    upload: span('upload', 'label'),
    arm: span('label', 'reboot'),
    reboot: span('reboot', 'health'),
    health: span('health', 'confirm'),
    promote: span('confirm', 'verdict'),
    sent: result.bytesSent ?? 0,
    image: result.imageBytes ?? 0,
  };
}

const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
function print(name, r) {
  const line =
    `${name}: ${r.verdict} in ${r.total} s — preflight ${r.preflight} s, upload ${r.upload} s, label+arm ${r.arm} s, ` +
    `reboot ${r.reboot} s, health ${r.health} s, confirm+promote ${r.promote} s; ` +
    `sent ${mib(r.sent)} of a ${mib(r.image)} image (${((100 * r.sent) / r.image).toFixed(1)}%)`;
  console.log(line);
}

try {
  console.log('virtual NAS: qemu TCG, 1 vCPU, USB stick, SSH over qemu user networking');
  writeFileSync(join(repo, 'root/etc/bench-change'), `${Date.now()}\n`);
  git('add', '-A');
  git('commit', '-q', '-m', 'root/-only change');
  print('root/-only change', await timedDeploy(build().imageDir));

  appendFileSync(join(repo, 'packages'), 'less\n');
  git('add', '-A');
  git('commit', '-q', '-m', 'package change');
  print('package change (+less)', await timedDeploy(build().imageDir));
} finally {
  await vm.stop();
}
