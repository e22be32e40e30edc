// Packing speed: our walker + cpio writer + zstd, against the reference NAS pipeline and
// against zstd alone on a finished archive (the floor). Build first: `npx tsc`.
// Usage: node bench/pack.mjs ROOTDIR [RUNS]   (each variant runs RUNS times, best kept)
//
// Besides wall time it reports CPU seconds (this process, its threads and every child
// it reaped, from /proc/self/stat): on a shared machine wall time follows the load of
// others, CPU time much less so.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { packTree } from '../dist/builder/segment.js';
import { walkTree } from '../dist/builder/tree.js';

const [rootArg, runsArg = '1'] = process.argv.slice(2);
if (!rootArg) {
  console.error('usage: node bench/pack.mjs ROOTDIR [RUNS]');
  process.exit(2);
}
const root = resolve(rootArg);
const runs = Number(runsArg);
const work = mkdtempSync(join(tmpdir(), 'ramboot-bench-'));
const q = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** utime + stime + cutime + cstime of this process, in seconds. */
function cpuSeconds() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0) / CLK_TCK;
}

function shell(cmd) {
  const r = spawnSync('sh', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
}

/** Times one run of `fn` (wall and CPU), which writes `out` afresh. */
async function measure(out, fn) {
  rmSync(out, { force: true });
  const [t0, c0] = [performance.now(), cpuSeconds()];
  await fn();
  return { seconds: (performance.now() - t0) / 1000, cpu: cpuSeconds() - c0, bytes: statSync(out).size };
}

const better = (x, y) => (x === undefined || y.seconds < x.seconds ? y : x);

const loadBefore = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
try {
  // The floor's input, made first: it also warms the page cache for every variant alike.
  const ready = join(work, 'ready.cpio');
  shell(`cd ${q(root)} && find . | cpio -o -H newc --quiet > ${q(ready)}`);

  // Rounds interleave the variants, so a burst of load from elsewhere hits all of them.
  let a, b, c;
  for (let i = 0; i < runs; i++) {
    a = better(a, await measure(join(work, 'a.cpio.zst'), () => packTree(root, join(work, 'a.cpio.zst'))));
    b = better(b, await measure(join(work, 'b.cpio.gz'), () =>
      shell(`cd ${q(root)} && find . | cpio -o -H newc --quiet | gzip > ${q(join(work, 'b.cpio.gz'))}`)));
    c = better(c, await measure(join(work, 'c.cpio.zst'), () =>
      shell(`zstd -T0 -3 -q -c < ${q(ready)} > ${q(join(work, 'c.cpio.zst'))}`)));
  }

  // The walk alone, to show its share of (a).
  const t0 = performance.now();
  const entries = walkTree(root).length;
  const walk = (performance.now() - t0) / 1000;

  const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
  const row = (name, r) =>
    console.log(`${name.padEnd(44)} ${r.seconds.toFixed(2).padStart(7)} s ${r.cpu.toFixed(2).padStart(7)} s ${mb(r.bytes).padStart(11)}`);
  console.log(`tree ${root}: ${entries} entries, ${mb(statSync(ready).size)} as cpio; best of ${runs}`);
  console.log(`load average before the runs: ${loadBefore} (on ${availableParallelism()} cores)`);
  console.log(`${''.padEnd(44)} ${'wall'.padStart(9)} ${'cpu'.padStart(9)} ${'output'.padStart(11)}`);
  row('(a) ramboot walk + cpio + zstd -T0 -3', a);
  console.log(`${'    walking the tree alone'.padEnd(44)} ${walk.toFixed(2).padStart(7)} s`);
  row('(b) find | cpio -o -H newc | gzip', b);
  row('(c) zstd -T0 -3 on a finished cpio archive', c);
  const ratio = (x, y) => `${(x / y).toFixed(2)}x`;
  console.log(`speedup (b)/(a): ${ratio(b.seconds, a.seconds)} wall, ${ratio(b.cpu, a.cpu)} cpu   (goal >= 8x)`);
  console.log(`size (a)/(b): ${(a.bytes / b.bytes).toFixed(2)}   (goal <= 1)`);
  console.log(`(a)/(c): ${ratio(a.seconds, c.seconds)} wall, ${ratio(a.cpu, c.cpu)} cpu   (goal <= 1.5x)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
