// Cold build of the Debian example against a rebuild after a root/-only change.
// Goal: the rebuild takes at most 10% of the cold build. Prints figures; asserts nothing.
// Usage: node bench/build.mjs   (after scripts/setup.sh; as root)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-build-'));
const env = { ...process.env, HOME: join(root, 'home') };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const state = join(root, 'state');
const ramboot = (...args) => JSON.parse(execFileSync('node', [cli, ...args], { env, stdio: ['ignore', 'pipe', 'ignore'] }).toString() || 'null');

execFileSync('node', [cli, 'init', repo, '--distro', 'debian'], { env, stdio: 'ignore' });
const timed = (label) => {
  const t = process.hrtime.bigint();
  const r = ramboot('build', '--repo', repo, '--state', state, '--json');
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  console.log(`${label.padEnd(26)} ${s.toFixed(1).padStart(6)} s  stage reused: ${r.stageReused}, base reused: ${r.baseReused}, ` +
    r.segments.map((x) => `${x.name} ${(x.bytes / 2 ** 20).toFixed(1)} MiB`).join(', '));
  return s;
};
const cold = timed('cold build');
writeFileSync(join(repo, 'root/etc/motd'), `changed ${Date.now()}\n`);
execFileSync('git', ['-C', repo, 'add', '-A']);
execFileSync('git', ['-C', repo, '-c', 'user.name=bench', '-c', 'user.email=bench@localhost', 'commit', '-qm', 'motd']);
const warm = timed('rebuild (root/ change)');
console.log(`rebuild / cold = ${((100 * warm) / cold).toFixed(1)}% (goal: at most 10%)`);
