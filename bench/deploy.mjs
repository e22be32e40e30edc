// What each kind of update costs to deploy on the virtual NAS (Debian example), from
// `ramboot deploy` to promoted: (c) a root/-only change, (a) one package added, (b) a
// library upgraded, (d) a kernel change. For each: the bytes the deploy sent (its own
// figure) as a share of the image, beside what `xdelta3` needs between the two images'
// uncompressed files, and the deploy's time split into its steps. Then boot to SSH with
// the base as ramboot packs it (pieces) and as one zstd stream (how it was packed before
// delta uploads), cold starts alternating on two copies of the same disk.
// The library and the kernel are real upgrades: the first image pins libssl3 and
// linux-image-amd64 to the release's own versions (bookworm/main), later ones take the
// newest apt offers (bookworm-security).
// Usage: node bench/deploy.mjs [BOOTS]   (after scripts/setup.sh and `npx tsc -p .`; as root)
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { readManifest } from '../dist/image/manifest.js';
import { targetFor } from '../dist/deploy/target.js';
import { deploy } from '../dist/deploy/deploy.js';
import { Journal } from '../dist/deploy/journal.js';
import { waitUntil } from '../dist/deploy/reboot.js';
import { startVm } from '../dist/vm/qemu.js';
import { freePort } from './ports.mjs';

const boots = Number(process.argv[2] ?? 3);
const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-deploy-'));
const env = { ...process.env, HOME: join(root, 'home'), RAMBOOT_IDENTITY: '' };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const images = join(root, 'images');
const state = process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state';
const run = (...args) => execFileSync('node', [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const git = (...args) => execFileSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid', ...args], { cwd: repo, stdio: 'ignore' });
const sh = (cmd) => execFileSync('sh', ['-c', cmd], { encoding: 'utf8', maxBuffer: 1 << 30 });
const build = () => JSON.parse(run('build', '--repo', repo, '--state', state, '--images', images, '--json')).imageDir;
const mib = (n) => (n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(2)} MiB`);

/** The version of `pkg` in the release's own suite (bookworm/main), and the one apt would install. */
function versions(pkg) {
  const lines = sh(`apt-cache madison ${pkg}`).split('\n').map((l) => l.split('|').map((f) => f.trim()));
  const release = lines.find((f) => / bookworm\/main /.test(` ${f[2]} `))?.[1];
  const newest = / Candidate: (\S+)/.exec(sh(`apt-cache policy ${pkg}`))?.[1];
  if (!release || !newest || release === newest) throw new Error(`apt offers no upgrade of ${pkg} over bookworm/main (${release} → ${newest}): run apt-get update`);
  return { release, newest };
}

/** One file of an image, by its role: the kernel, the microcode, or a segment by name. */
function files(manifest, imageDir) {
  const out = new Map([['kernel', { path: join(imageDir, manifest.kernel.file), compressed: false }]]);
  if (manifest.ucode) out.set('ucode', { path: join(imageDir, manifest.ucode.file), compressed: false });
  for (const s of manifest.segments) out.set(s.name, { path: join(imageDir, s.file), compressed: true, sha256: s.sha256 });
  return out;
}

/** Bytes of `xdelta3 -e -9` from each file of `before` to the same file of `after`, uncompressed. */
function xdelta(before, after) {
  const work = mkdtempSync(join(root, 'xdelta-'));
  const plain = (f, name) => {
    if (!f.compressed) return f.path;
    const out = join(work, name);
    sh(`zstd -q -dc '${f.path}' > '${out}'`);
    return out;
  };
  let total = 0;
  const a = files(before.manifest, before.imageDir);
  for (const [role, f] of files(after.manifest, after.imageDir)) {
    const old = a.get(role);
    if (old && readFileSync(old.path).equals(readFileSync(f.path))) continue;
    const target = plain(f, `${role}.new`);
    const out = join(work, `${role}.vcdiff`);
    if (old) {
      const source = plain(old, `${role}.old`);
      const window = Math.max(statSync(source).size, 1 << 20);
      sh(`xdelta3 -e -9 -f -B ${window} -s '${source}' '${target}' '${out}'`);
    } else sh(`xdelta3 -e -9 -f '${target}' '${out}'`);
    total += statSync(out).size;
  }
  rmSync(work, { recursive: true, force: true });
  return total;
}

const sshPort = await freePort();
const httpPort = await freePort();
run('init', repo, '--distro', 'debian');
const cfg = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
cfg.trial = { confirm_timeout: '5m', reboot_deadline: '6m' };
cfg.health = { deadline: '3m', checks: [{ name: 'status page', http: `http://127.0.0.1:${httpPort}/release`, body: 'ramboot.slot=new' }] };
writeFileSync(join(repo, 'ramboot.yaml'), stringify(cfg));
const basePackages = readFileSync(join(repo, 'packages'), 'utf8');
const ssl = versions('libssl3');
const kernel = versions('linux-image-amd64');
const pins = (p) => Object.entries(p).map(([pkg, v]) => `${pkg}=${v}\n`).join('');
writeFileSync(join(repo, 'packages'), basePackages + pins({ libssl3: ssl.release, 'linux-image-amd64': kernel.release }));
git('add', '-A');
git('commit', '-q', '-m', 'bench settings, libssl3 and the kernel at the release versions');

/** The image of HEAD with its manifest. */
async function image() {
  const imageDir = build();
  return { imageDir, manifest: await readManifest(imageDir) };
}
let current = await image();
const disk = join(root, 'disk.img');
run('format', '--disk', disk, '--image', current.imageDir);
const serialLog = join(root, 'serial.log');
const vm = startVm({ disk, sshPort, httpPort, serialLog });
await vm.waitForSsh(10 * 60_000);

async function timedDeploy({ imageDir, manifest }) {
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

/** Commits a change to the repository, builds it, deploys it, and prints what it cost. */
async function step(name, change) {
  change();
  git('add', '-A');
  git('commit', '-q', '-m', name);
  const next = await image();
  const x = xdelta(current, next);
  const r = await timedDeploy(next);
  if (r.verdict !== 'promoted') throw new Error(`${name}: ${r.verdict}`);
  const pct = (n) => `${((100 * n) / r.image).toFixed(3)}%`;
  console.log(
    `${name}: sent ${mib(r.sent)} = ${pct(r.sent)} of a ${mib(r.image)} image; xdelta3 ${mib(x)} = ${pct(x)}; ` +
      `ramboot/xdelta3 ${(r.sent / x).toFixed(2)}x\n` +
      `  ${r.verdict} in ${r.total} s: preflight ${r.preflight} s, upload ${r.upload} s, label+arm ${r.arm} s, ` +
      `reboot ${r.reboot} s, health ${r.health} s, confirm+promote ${r.promote} s`,
  );
  current = next;
  return r;
}

/** Seconds from qemu's start to SSH answering, on `disk`. */
async function coldBoot(d) {
  const port = await freePort();
  const t0 = Date.now();
  const v = startVm({ disk: d, sshPort: port, httpPort: await freePort(), serialLog: `${d}.serial` });
  try {
    const target = { ...targetFor(current.manifest.settings, { address: '127.0.0.1', port }), hostKey: current.manifest.hostKey };
    const back = await waitUntil(target, 10 * 60_000, (s) => s.bootId !== '');
    if (!back.running) throw new Error(`${d} did not answer: ${back.last.error}`);
    return (Date.now() - t0) / 1000;
  } finally {
    await v.stop();
  }
}

try {
  console.log('virtual NAS: qemu TCG, 1 vCPU, SeaBIOS and syslinux, USB stick, SSH over qemu user networking');
  await step('(c) root/-only change', () => writeFileSync(join(repo, 'root/etc/bench-change'), `${Date.now()}\n`));
  await step('(a) one package added (less)', () => writeFileSync(join(repo, 'packages'), `${basePackages}less\n${pins({ libssl3: ssl.release, 'linux-image-amd64': kernel.release })}`));
  await step(`(b) a library upgraded (libssl3 ${ssl.release} → ${ssl.newest})`, () =>
    writeFileSync(join(repo, 'packages'), `${basePackages}less\n${pins({ 'linux-image-amd64': kernel.release })}`));
  const k = current.manifest.kernel;
  await step(`(d) a kernel change (linux-image-amd64 ${kernel.release} → ${kernel.newest})`, () => writeFileSync(join(repo, 'packages'), `${basePackages}less\n`));
  const modules = current.manifest.files.filter((f) => f.path.startsWith('lib/modules/') || f.path.startsWith('usr/lib/modules/')).reduce((n, f) => n + (f.size ?? 0), 0);
  console.log(`  the kernel's own size: ${mib(k.bytes)} before, ${mib(current.manifest.kernel.bytes)} after; its modules in the image ${mib(modules)} unpacked`);
} finally {
  await vm.stop();
}

// Boot to SSH, the base as pieces (the disk as deployed) and as one zstd stream of the same archives.
const base = current.manifest.segments.find((s) => s.name === 'base');
const stream = join(root, 'base-one-stream.cpio.zst');
sh(`zstd -q -dc '${join(current.imageDir, base.file)}' | zstd -q -3 -T0 -c > '${stream}'`);
const oneStream = join(root, 'disk-one-stream.img');
copyFileSync(disk, oneStream);
sh(`mcopy -o -i '${oneStream}' '${stream}' '::/boot/ramboot/${base.file}'`);
const times = { pieces: [], 'one stream': [] };
for (let i = 0; i < boots; i++) {
  times.pieces.push(await coldBoot(disk));
  times['one stream'].push(await coldBoot(oneStream));
}
console.log(`\ncold start to SSH, the last image (base ${mib(base.bytes)} as pieces, ${mib(statSync(stream).size)} as one stream), ${boots} boots each, alternating:`);
for (const [name, t] of Object.entries(times)) {
  const s = [...t].sort((a, b) => a - b);
  console.log(`  base as ${name.padEnd(10)} min ${s[0].toFixed(1)} s, median ${s[Math.floor(s.length / 2)].toFixed(1)} s, max ${s.at(-1).toFixed(1)} s`);
}
if (!existsSync(join(root, 'keep'))) rmSync(root, { recursive: true, force: true });
