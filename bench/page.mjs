// The status page and /api/status with 1,000 reconciles in the history: latency of the
// page (HTML), of /api/status, of one history entry and of /metrics, and the memory the
// controller adds for the 1,000 records. Goal: under 100 ms each on 2 cores.
// Usage: node --expose-gc bench/page.mjs [REQUESTS]   (after `npx tsc -p tsconfig.json`)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Controller } from '../dist/controller/controller.js';
import { REASON } from '../dist/deploy/verdict.js';
import { Metrics } from '../dist/controller/metrics.js';
import { Notifier } from '../dist/controller/notify/notifier.js';
import { Live } from '../dist/controller/page/live.js';
import { pageRoutes } from '../dist/controller/page/routes.js';
import { localRepo } from '../dist/controller/repo.js';
import { startServer } from '../dist/controller/server.js';

const REQUESTS = Number(process.argv[2] ?? 200);
const ENTRIES = 1000;
const GOAL_MS = 100;

const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-page-'));
const repo = join(root, 'nas');
const git = (...args) => execFileSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid', ...args], { cwd: repo, stdio: 'pipe' }).toString().trim();
execFileSync('git', ['init', '-q', '-b', 'main', repo]);
// An invalid distro: the reconcile at start ends at the build at once, and nothing builds while measuring.
writeFileSync(join(repo, 'ramboot.yaml'), 'host: { name: nas }\ndistro: { name: gentoo }\n');
git('add', '-A');
git('commit', '-q', '-m', 'bench');
const commit = git('rev-parse', 'HEAD');
const stateDir = join(root, 'state');
const state = { dir: stateDir, images: join(stateDir, 'images'), cache: join(stateDir, 'cache'), vm: join(stateDir, 'vm') };

const metrics = new Metrics();
const ctrl = new Controller({ repo: metrics.countPolls(localRepo(repo, 'main')), state, reach: () => ({}), keep: ENTRIES, emit: () => {} });
const live = new Live();
live.attach(ctrl);
metrics.attach(ctrl);
const notifier = new Notifier({ gitdir: join(repo, '.git') });
notifier.attach(ctrl);
const port = 20000 + Math.floor(Math.random() * 20000);
const app = await startServer(ctrl, { host: '127.0.0.1', port, token: 'bench', routes: [pageRoutes({ host: 'nas', live, notifications: () => notifier.state() }), metrics.routes()] });
const base = `http://127.0.0.1:${port}`;
await ctrl.poll({ kind: 'start' });
await ctrl.drained();

/** Heap and RSS after a full collection (with --expose-gc), in MiB. */
function memory() {
  globalThis.gc?.();
  const m = process.memoryUsage();
  return { heap: m.heapUsed / 2 ** 20, rss: m.rss / 2 ** 20 };
}

async function timed(path, n) {
  const ms = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await fetch(`${base}${path}`);
    const body = await res.text();
    ms.push(performance.now() - t);
    if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status}`);
    bytes = body.length;
  }
  ms.sort((a, b) => a - b);
  const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
  return { path, p50: q(0.5), p95: q(0.95), max: ms.at(-1), bytes };
}

const PHASES = [['queued', 0.2], ['build', 40], ['preflight', 2], ['upload', 18], ['reboot', 100], ['health', 12], ['promote', 3]];
const OUTCOMES = [
  ['promoted', REASON.HEALTHY, 'build promoted: every health check passed'],
  ['trial-not-healthy', REASON.CHECK_FAILED, 'health check "photos" failed: HTTP 502 from http://127.0.0.1/photos; rolled back to the running build'],
  ['build-failed', REASON.BUILD_FAILED, 'build failed: ramboot.yaml, line 2, key distro.name: must be one of "alpine", "debian"'],
  ['superseded', REASON.SUPERSEDED, 'superseded by a newer commit before it started'],
];

function record(i) {
  let t = Date.now() - (ENTRIES - i) * 3_600_000;
  const phases = PHASES.map(([name, s]) => {
    const start = new Date(t).toISOString();
    t += s * 1000;
    return { name, start, end: new Date(t).toISOString() };
  });
  const [outcome, reason, message] = OUTCOMES[i % OUTCOMES.length];
  return {
    id: `${new Date(Date.parse(phases[0].start)).toISOString().replace(/[-:.]/g, '')}-${String(i).padStart(6, '0')}`,
    commit,
    author: 'Bench Marker',
    subject: `change number ${i}: tune the photo share's cache`,
    trigger: { kind: 'webhook', detail: 'github' },
    noticedAt: phases[0].start,
    startedAt: phases[0].end,
    endedAt: phases.at(-1).end,
    phases,
    state: 'done',
    outcome,
    reason,
    message,
    buildId: `${commit.slice(0, 8)}-${String(i).padStart(8, '0')}`,
    bytesSent: 2_000_000 + i,
    imageBytes: 84_000_000,
  };
}

// Warm up with an empty history, then measure what 1,000 records add.
await timed('/', 20);
await timed('/api/status', 20);
const empty = memory();
for (let i = 0; i < ENTRIES; i++) ctrl.history.save(record(i));
const results = [];
results.push(await timed('/', REQUESTS));
results.push(await timed('/api/status', REQUESTS));
const newest = ctrl.history.list(1)[0].id;
results.push(await timed(`/history/${newest}`, REQUESTS / 4));
results.push(await timed(`/?before=${record(ENTRIES / 2).id}`, REQUESTS / 4));
results.push(await timed('/metrics', REQUESTS / 4));
const full = memory();

const f = (x) => x.toFixed(1).padStart(7);
console.log(`status page with ${ENTRIES} history entries, ${REQUESTS} requests each (${availableParallelism()} cores, node ${process.version})`);
console.log(`${'request'.padEnd(40)}  p50 ms  p95 ms  max ms   KiB`);
for (const r of results) console.log(`${r.path.slice(0, 40).padEnd(40)} ${f(r.p50)} ${f(r.p95)} ${f(r.max)} ${(r.bytes / 1024).toFixed(0).padStart(5)}`);
console.log(`memory the controller adds for ${ENTRIES} entries: heap ${(full.heap - empty.heap).toFixed(1)} MiB (${empty.heap.toFixed(1)} → ${full.heap.toFixed(1)}), rss ${(full.rss - empty.rss).toFixed(1)} MiB (${empty.rss.toFixed(1)} → ${full.rss.toFixed(1)})${globalThis.gc ? '' : '  [run with --expose-gc for figures after a full collection]'}`);
const worst = Math.max(results[0].p95, results[1].p95);
console.log(`goal: page and /api/status under ${GOAL_MS} ms (p95): ${worst < GOAL_MS ? 'met' : 'NOT met'} (worst p95 ${worst.toFixed(1)} ms)`);

await app.close();
rmSync(root, { recursive: true, force: true });
