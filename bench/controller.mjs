// The controller on the virtual NAS (Debian example): from `git commit` of a root/-only
// change to promoted, split into noticed, build, upload, reboot, health and promote, and
// the controller's own overhead (noticing, queueing, bookkeeping). Then the idle
// controller: its memory (RSS) and the CPU one poll costs when nothing changed, following
// the local repository and following an HTTP remote. Figures are printed, not asserted.
// Usage: node bench/controller.mjs   (after scripts/setup.sh; as root)
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { freePort } from './ports.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-controller-'));
const env = { ...process.env, HOME: join(root, 'home'), RAMBOOT_IDENTITY: '', RAMBOOT_CACHE: join(process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state', 'cache') };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const state = join(root, 'state');
const git = (...args) => execFileSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid', ...args], { cwd: repo, stdio: 'ignore' });
execFileSync('node', [cli, 'init', repo, '--distro', 'debian'], { env, stdio: 'ignore' });
const [sshPort, httpPort, apiPort] = [await freePort(), await freePort(), await freePort()];
const cfg = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
cfg.trial = { confirm_timeout: '5m', reboot_deadline: '6m' };
cfg.health = { deadline: '3m', checks: [{ name: 'status page', http: `http://127.0.0.1:${httpPort}/release`, body: 'ramboot.slot=new' }] };
cfg.watch = { poll: '*/5 * * * * *' };
writeFileSync(join(repo, 'ramboot.yaml'), stringify(cfg));
git('add', '-A');
git('commit', '-q', '-m', 'bench settings');

const api = `http://127.0.0.1:${apiPort}`;
const up = (source) => spawn('node', [cli, 'up', ...source, '--state', state, '--listen', `127.0.0.1:${apiPort}`, '--ssh-port', String(sshPort), '--http-port', String(httpPort)], { env, stdio: 'ignore' });
const history = async () => (await (await fetch(`${api}/api/history`)).json());
async function until(pred, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out');
    await sleep(500);
  }
}
const head = () => execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repo }).toString().trim();
const done = (commit) => until(async () => (await history()).find((r) => r.commit === commit && r.state === 'done'), 20 * 60_000);

/** CPU seconds (user + system) and RSS of a process, from /proc. */
function usage(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]);
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
  return { cpu: ticks / 100, rss };
}

async function idle(proc, name, polls, periodMs) {
  await sleep(10_000);
  const a = usage(proc.pid);
  await sleep(polls * periodMs);
  const b = usage(proc.pid);
  console.log(`idle, following ${name}: RSS ${(b.rss / 2 ** 20).toFixed(1)} MiB; CPU ${(((b.cpu - a.cpu) / polls) * 1000).toFixed(1)} ms per poll (${polls} polls, every ${periodMs / 1000} s)`);
}

let ctrl = up(['--repo', repo]);
try {
  await done(head());
  writeFileSync(join(repo, 'root/etc/bench-change'), `${Date.now()}\n`);
  git('add', '-A');
  const t0 = Date.now();
  git('commit', '-q', '-m', 'a root/-only change');
  const r = await done(head());
  const span = (name) => {
    const p = r.phases.find((x) => x.name === name);
    return p ? (Date.parse(p.end ?? r.endedAt) - Date.parse(p.start)) / 1000 : 0;
  };
  const total = (Date.parse(r.endedAt) - t0) / 1000;
  const noticed = (Date.parse(r.noticedAt) - t0) / 1000;
  const work = ['build', 'preflight', 'upload', 'reboot', 'health', 'promote'].reduce((n, p) => n + span(p), 0);
  console.log(`commit → ${r.outcome} in ${total.toFixed(1)} s: noticed ${noticed.toFixed(1)} s, build ${span('build').toFixed(1)} s, preflight ${span('preflight').toFixed(1)} s, upload ${span('upload').toFixed(1)} s, reboot ${span('reboot').toFixed(1)} s, health ${span('health').toFixed(1)} s, promote ${span('promote').toFixed(1)} s`);
  console.log(`controller overhead (noticed + queue + bookkeeping): ${(total - work).toFixed(1)} s (goal < 5 s)`);
  await idle(ctrl, 'the local repository', 30, 2_000);

  // The same machine followed through an HTTP remote: git's own http-backend serving a bare clone.
  ctrl.kill('SIGKILL');
  const served = join(root, 'served');
  mkdirSync(served);
  execFileSync('git', ['clone', '-q', '--bare', repo, join(served, 'nas.git')]);
  const httpPortGit = await freePort();
  const backend = spawn('node', ['-e', `
    const { createServer } = require('node:http'); const { spawn } = require('node:child_process');
    createServer((req, res) => {
      const u = new URL(req.url, 'http://x');
      const cgi = spawn('git', ['http-backend'], { env: { ...process.env, GIT_PROJECT_ROOT: ${JSON.stringify(served)}, GIT_HTTP_EXPORT_ALL: '1', REQUEST_METHOD: req.method, PATH_INFO: u.pathname, QUERY_STRING: u.search.slice(1), CONTENT_TYPE: req.headers['content-type'] || '', GIT_PROTOCOL: req.headers['git-protocol'] || '' } });
      req.pipe(cgi.stdin); let head = Buffer.alloc(0), sent = false;
      cgi.stdout.on('data', (c) => { if (sent) return res.write(c); head = Buffer.concat([head, c]); const e = head.indexOf('\\r\\n\\r\\n'); if (e < 0) return;
        let status = 200; for (const l of head.subarray(0, e).toString().split('\\r\\n')) { const [k, ...v] = l.split(':'); if (k.toLowerCase() === 'status') status = parseInt(v.join(':')); else res.setHeader(k, v.join(':').trim()); }
        res.writeHead(status); res.write(head.subarray(e + 4)); sent = true; });
      cgi.on('close', () => res.end());
    }).listen(${httpPortGit}, '127.0.0.1');`], { stdio: 'ignore' });
  ctrl = up(['--url', `http://127.0.0.1:${httpPortGit}/nas.git`, '--allow-http']);
  await until(async () => (await (await fetch(`${api}/api/status`)).json()).lastPoll?.ok, 10 * 60_000);
  await idle(ctrl, 'an HTTP remote (ls-refs, no fetch)', 12, 5_000);
  backend.kill();
} finally {
  ctrl.kill('SIGTERM');
  await sleep(5_000);
}
