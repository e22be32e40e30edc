// Boot cost of a segment's format: the kernel started under qemu (TCG) with each initrd,
// timed from qemu's start to "Run /bin/false as init process" on the serial console,
// i.e. the kernel's start plus unpacking the initramfs. The runs alternate between the
// initrds, so a machine whose speed drifts affects each alike. Figures are printed.
// Usage: node bench/unpack.mjs KERNEL RUNS INITRD_A INITRD_B
//   e.g. a base as one zstd stream (an image built before pieces) against the same
//   tree packed as pieces (node -e "…packTree…" on the unpacked base).
import { spawn } from 'node:child_process';

const [kernel, runsArg, ...initrds] = process.argv.slice(2);
if (!kernel || !runsArg || initrds.length < 2) {
  console.error('usage: node bench/unpack.mjs KERNEL RUNS INITRD_A INITRD_B');
  process.exit(2);
}

/** Seconds from qemu's start to the kernel running init (after the unpack). */
function boot(initrd) {
  return new Promise((resolve, reject) => {
    const t = process.hrtime.bigint();
    const q = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-m', '2048', '-nographic', '-no-reboot', '-kernel', kernel, '-initrd', initrd,
      '-append', 'console=ttyS0 rdinit=/bin/false panic=-1 quiet loglevel=4'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    let at;
    q.stdout.on('data', (d) => {
      out += d;
      if (at === undefined && /Run \/bin\/false as init process|Kernel panic/.test(out)) {
        at = Number(process.hrtime.bigint() - t) / 1e9;
        q.kill('SIGKILL');
      }
    });
    q.on('close', () => (at === undefined ? reject(new Error(`no init for ${initrd}: ${out.slice(-500)}`)) : resolve(at)));
  });
}

const times = initrds.map(() => []);
for (let i = 0; i < Number(runsArg); i++) {
  for (const [k, initrd] of initrds.entries()) times[k].push(await boot(initrd));
}
for (const [k, initrd] of initrds.entries()) {
  const s = [...times[k]].sort((a, b) => a - b);
  console.log(`${initrd}: min ${s[0].toFixed(1)} s, median ${s[Math.floor(s.length / 2)].toFixed(1)} s, max ${s.at(-1).toFixed(1)} s over ${s.length} boots`);
}
