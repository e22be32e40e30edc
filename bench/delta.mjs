// What a package change costs to deploy: a base segment packed as ramboot packs it, the
// same base with files added (a package), and the delta deploy/medium.ts would send.
// Build first: `npx tsc`.
// Usage: node bench/delta.mjs ROOTDIR [AFTER_ROOTDIR]
//   ROOTDIR alone: the "after" base is ROOTDIR plus eight text files of 16 KiB spread
//   over the tree (a small package touches a few directories and the package database).
//   A package stage of a build is a good ROOTDIR: $STATE/cache/stages/<key>/root.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { writeSegment } from '../dist/builder/segment.js';
import { compareUtf8, walkTree } from '../dist/builder/tree.js';
import { deltaBytes, makeDelta } from '../dist/deploy/delta.js';

const [beforeArg, afterArg] = process.argv.slice(2);
if (!beforeArg) {
  console.error('usage: node bench/delta.mjs ROOTDIR [AFTER_ROOTDIR]');
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'ramboot-bench-delta-'));
const mib = (n) => `${(n / 1024 / 1024).toFixed(2)} MiB`;
const skip = (p) => p.startsWith('boot/') || p.startsWith('proc/') || p.startsWith('sys/') || p.startsWith('dev/');
const tree = (dir) => walkTree(resolve(dir), { exclude: skip, mtime: () => 0 });

function withPackage(entries) {
  const files = entries.filter((e) => e.type === 'file');
  const extra = Array.from({ length: 8 }, (_, k) => {
    const near = files[Math.floor((files.length * (k + 1)) / 9)];
    const words = Array.from({ length: 3000 }, (_, j) => createHash('sha256').update(`${k}-${j}`).digest('hex').slice(0, (j % 7) + 2));
    return { path: `${near.path}-bench-added`, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, data: Buffer.from(words.join(' ')) };
  });
  return [...entries, ...extra].sort((a, b) => compareUtf8(a.path, b.path));
}

async function pack(name, entries) {
  const t = performance.now();
  const r = await writeSegment(entries, join(work, `${name}.cpio.zst`));
  return { ...r, ms: performance.now() - t };
}

try {
  const before = tree(beforeArg);
  const after = afterArg ? tree(afterArg) : withPackage(before);
  const a = await pack('before', before);
  const b = await pack('after', after);
  const single = spawnSync('sh', ['-c', `zstd -dc ${a.file} | zstd -T0 -3 -c | wc -c`], { encoding: 'utf8' });
  const t = performance.now();
  const d = makeDelta(readFileSync(a.file), readFileSync(b.file));
  const ms = performance.now() - t;
  const sent = deltaBytes(d, { basis: `/media/usb/boot/ramboot/${a.sha256}.cpio.zst`, literal: `/media/usb/boot/ramboot/${b.sha256}.cpio.zst.lit`, out: `/media/usb/boot/ramboot/${b.sha256}.cpio.zst.part` });
  console.log(`base before        ${mib(a.bytes)} (packed in ${(a.ms / 1000).toFixed(1)} s)`);
  console.log(`base after         ${mib(b.bytes)} (packed in ${(b.ms / 1000).toFixed(1)} s)`);
  console.log(`one zstd -3 stream ${mib(Number(single.stdout))} (one archive, as before pieces: the pieces are ${((a.bytes / Number(single.stdout) - 1) * 100).toFixed(1)}% larger)`);
  console.log(`delta              ${sent} bytes sent (${((100 * sent) / b.bytes).toFixed(2)}% of the base), ${d.ops.length} dd runs, computed in ${ms.toFixed(0)} ms`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
