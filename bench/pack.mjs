// Packing speed: our walker + cpio writer + zstd, against the reference NAS pipeline and
// against zstd alone on a finished archive (the floor). Build first: `npx tsc`.
// Usage: node bench/pack.mjs ROOTDIR [RUNS]   (each variant runs RUNS times, best kept)
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { writeSegment } from '../dist/build/segment.js';
import { walkTree } from '../dist/build/tree.js';

const [rootArg, runsArg = '1'] = process.argv.slice(2);
if (!rootArg) {
  console.error('usage: node bench/pack.mjs ROOTDIR [RUNS]');
  process.exit(2);
}
const root = resolve(rootArg);
const runs = Number(runsArg);
const work = mkdtempSync(join(tmpdir(), 'ramboot-bench-'));
const q = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

function shell(cmd) {
  const r = spawnSync('sh', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
}

/** Best of `runs` timings; each run writes `out` afresh. */
async function best(out, fn) {
  let seconds = Infinity;
  let extra;
  for (let i = 0; i < runs; i++) {
    rmSync(out, { force: true });
    const t0 = performance.now();
    const r = await fn();
    const s = (performance.now() - t0) / 1000;
    if (s < seconds) [seconds, extra] = [s, r];
  }
  return { seconds, bytes: statSync(out).size, extra };
}

try {
  // The floor's input, made first: it also warms the page cache for every variant alike.
  const ready = join(work, 'ready.cpio');
  shell(`cd ${q(root)} && find . | cpio -o -H newc --quiet > ${q(ready)}`);

  const a = await best(join(work, 'a.cpio.zst'), async () => {
    const t0 = performance.now();
    const entries = walkTree(root);
    const walk = (performance.now() - t0) / 1000;
    await writeSegment(entries, join(work, 'a.cpio.zst'));
    return { walk, entries: entries.length };
  });
  const b = await best(join(work, 'b.cpio.gz'), () =>
    shell(`cd ${q(root)} && find . | cpio -o -H newc --quiet | gzip > ${q(join(work, 'b.cpio.gz'))}`));
  const c = await best(join(work, 'c.cpio.zst'), () =>
    shell(`zstd -T0 -3 -q -c < ${q(ready)} > ${q(join(work, 'c.cpio.zst'))}`));

  const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
  const row = (name, r) => console.log(`${name.padEnd(44)} ${r.seconds.toFixed(2).padStart(7)} s ${mb(r.bytes).padStart(11)}`);
  console.log(`tree ${root}: ${a.extra.entries} entries, ${mb(statSync(ready).size)} as cpio; best of ${runs}`);
  row('(a) ramboot walk + cpio + zstd -T0 -3', a);
  console.log(`${'    of which walking the tree'.padEnd(44)} ${a.extra.walk.toFixed(2).padStart(7)} s`);
  row('(b) find | cpio -o -H newc | gzip', b);
  row('(c) zstd -T0 -3 on a finished cpio archive', c);
  console.log(`speedup (b)/(a): ${(b.seconds / a.seconds).toFixed(1)}x   (goal >= 8x)`);
  console.log(`size (a)/(b): ${(a.bytes / b.bytes).toFixed(2)}   (goal <= 1)`);
  console.log(`(a)/(c): ${(a.seconds / c.seconds).toFixed(2)}x   (goal <= 1.5x)`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
