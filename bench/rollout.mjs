// One commit rolled out to two virtual NASes from one repository (Debian example, two
// machines, canary b): from `git commit` of a change to the shared root/ to both promoted,
// split per machine into waiting for the rollout, build, preflight, upload, reboot,
// health and promote; then `ramboot publish` of every machine and of a root/-only change
// to a registry on loopback (Debian's docker-registry) and what a site controller pulls
// for it (`ramboot deploy --registry`, no machine: it stops at connecting) against the
// whole image. Figures are printed, not asserted. The machines boot one after the other.
// Usage: node bench/rollout.mjs   (after scripts/setup.sh; as root)
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { freePort } from './ports.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-rollout-'));
const env = { ...process.env, HOME: join(root, 'home'), RAMBOOT_IDENTITY: '', RAMBOOT_CACHE: join(process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state', 'cache') };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const state = join(root, 'state');
const git = (...args) => execFileSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid', ...args], { cwd: repo, stdio: 'ignore' });
const head = () => execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repo }).toString().trim();
execFileSync('node', [cli, 'init', repo, '--distro', 'debian'], { env, stdio: 'ignore' });
const cfg = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
cfg.trial = { confirm_timeout: '5m', reboot_deadline: '6m' };
// The example's status page check asks the host's port 8080; each machine here has its own. The built-in checks stay.
cfg.health = { deadline: '2m', checks: [] };
cfg.rollout = { canary: 'b' };
writeFileSync(join(repo, 'ramboot.yaml'), stringify(cfg));
for (const m of ['a', 'b']) {
  mkdirSync(join(repo, 'machines', m), { recursive: true });
  writeFileSync(join(repo, 'machines', m, 'ramboot.yaml'), `host:\n  name: nas-${m}\n`);
}
git('add', '-A');
git('commit', '-q', '-m', 'two machines, canary b');

// The fleet gives machine i the ports + i: two free ports side by side, below the
// ephemeral range (where an outgoing connection could take one before qemu binds it).
const pair = async () => {
  for (;;) {
    const p = 20_000 + Math.floor(Math.random() * 12_000);
    if ((await free(p)) && (await free(p + 1))) return p;
  }
};
const free = (port) =>
  new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
const apiPort = await freePort();
const api = `http://127.0.0.1:${apiPort}`;
const history = async (m) => (await fetch(`${api}/machines/${m}/api/history`)).json();
const log = join(root, 'up.log');
async function until(what, pred, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; ramboot up's log: ${log}\n${readFileSync(log, 'utf8').split('\n').slice(-30).join('\n')}`);
    await sleep(500);
  }
}
const done = (m, commit) => until(`machine ${m}'s reconcile of ${commit.slice(0, 12)}`, async () => (await history(m)).find((r) => r.commit === commit && r.state === 'done'), 20 * 60_000);
const secs = (a, b) => ((Date.parse(b) - Date.parse(a)) / 1000).toFixed(1);

const t0 = Date.now();
const out = openSync(log, 'a');
const up = spawn('node', [cli, 'up', '--repo', repo, '--state', state, '--listen', `127.0.0.1:${apiPort}`, '--ssh-port', String(await pair()), '--http-port', String(await pair())], { env, stdio: ['ignore', out, out] });
try {
  const first = head();
  await done('b', first);
  await done('a', first);
  console.log(`start: two virtual NASes formatted and booted one after the other, and the first rollout, in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

  writeFileSync(join(repo, 'root/etc/bench-change'), `${Date.now()}\n`);
  git('add', '-A');
  const committed = new Date().toISOString();
  git('commit', '-q', '-m', 'a shared root/ change');
  const commit = head();
  const records = { b: await done('b', commit), a: await done('a', commit) };
  const phases = ['build', 'plan', 'preflight', 'upload', 'reboot', 'health', 'promote'];
  console.log(`a shared root/ change rolled out to 2 machines in ${secs(committed, records.a.endedAt)} s (commit to the last promotion)`);
  console.log(`machine  outcome   waited  ${phases.map((p) => p.padStart(9)).join(' ')}    total`);
  for (const m of ['b', 'a']) {
    const r = records[m];
    const span = (name) => {
      const p = r.phases.find((x) => x.name === name);
      return p ? secs(p.start, p.end ?? r.endedAt) : '-';
    };
    console.log(`${m.padEnd(8)} ${r.outcome.padEnd(9)} ${secs(committed, r.startedAt).padStart(6)}  ${phases.map((p) => span(p).padStart(9)).join(' ')} ${secs(r.startedAt, r.endedAt).padStart(8)}`);
  }
  console.log('(waited: from the commit to the start of the machine\'s reconcile; a waits for the canary b)');
} finally {
  up.kill('SIGTERM');
  await sleep(10_000);
}

// The registry: every machine published, then a root/-only change of machine a, and what a site pulls for it.
const registryPort = await freePort();
const storage = join(root, 'registry');
writeFileSync(join(root, 'registry.yml'), ['version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${storage}`, 'http:', `  addr: 127.0.0.1:${registryPort}`, ''].join('\n'));
const registry = spawn('docker-registry', ['serve', join(root, 'registry.yml')], { stdio: 'ignore' });
try {
  await until('the registry', async () => (await fetch(`http://127.0.0.1:${registryPort}/v2/`)).ok, 30_000);
  const ref = `127.0.0.1:${registryPort}/nas`;
  const publish = (args) => execFileSync('node', [cli, 'publish', '--repo', repo, '--state', state, ...args], { env, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  console.log(publish(['--registry', `${ref}:main`]));
  const site = join(root, 'site');
  // Nothing listens on port 1: the site pulls, verifies, and stops at connecting to the machine.
  const pull = () => {
    const r = spawnSyncOut('node', [cli, 'deploy', '--registry', `${ref}/a:main`, '--identity', join(env.HOME, '.config/ramboot/identity.txt'), '--state', site, '--address', '127.0.0.1', '--port', '1']);
    return /pulled build \S+ from \S+: (\d+) blob\(s\), (.*)$/m.exec(r)?.slice(1).join(' blob(s), ') ?? r;
  };
  console.log(`site, first pull of machine a (the whole image): ${pull()}`);
  mkdirSync(join(repo, 'machines/a/root/etc'), { recursive: true });
  writeFileSync(join(repo, 'machines/a/root/etc/bench-change'), `${Date.now()}\n`);
  git('add', '-A');
  git('commit', '-q', '-m', 'a root/-only change of machine a');
  console.log(publish(['--machine', 'a', '--registry', `${ref}/a:main`]));
  console.log(`site, pull of the root/-only change: ${pull()}`);
} finally {
  registry.kill();
}

function spawnSyncOut(cmd, args) {
  try {
    return execFileSync(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    return `${err.stdout ?? ''}${err.stderr ?? ''}`;
  }
}
