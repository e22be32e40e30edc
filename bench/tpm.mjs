// Boot to SSH of the Debian example on the virtual NAS (SeaBIOS, swtpm attached to both)
// with secrets.at_rest: medium and with tpm, cold starts of qemu one after the other; and
// how long unsealing takes at boot (ramboot-sealed's two kernel log lines). Figures are
// printed, not asserted.
// Usage: node bench/tpm.mjs [--runs N]   (after scripts/setup.sh; as root)
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startVm } from '../dist/vm/qemu.js';
import { tpmStatePath } from '../dist/vm/tpm.js';
import { freePort } from './ports.mjs';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const runs = Number(values.runs);
const cli = new URL('../dist/controller/cli.js', import.meta.url).pathname;
const root = mkdtempSync(join(tmpdir(), 'ramboot-bench-tpm-'));
// Enroll commits with the git CLI: a bench user with no git identity of its own gets one.
const env = { ...process.env, HOME: join(root, 'home'), RAMBOOT_IDENTITY: '', GIT_AUTHOR_NAME: 'bench', GIT_AUTHOR_EMAIL: 'bench@example.invalid', GIT_COMMITTER_NAME: 'bench', GIT_COMMITTER_EMAIL: 'bench@example.invalid' };
mkdirSync(env.HOME);
const repo = join(root, 'nas');
const state = process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state';
const run = (...args) => execFileSync('node', [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const git = (...args) => execFileSync('git', ['-C', repo, '-c', 'user.name=bench', '-c', 'user.email=bench@example.invalid', ...args], { stdio: 'ignore' });
const build = () => JSON.parse(run('build', '--repo', repo, '--state', state, '--images', join(root, 'images'), '--json'));

run('init', repo, '--distro', 'debian');
writeFileSync(join(repo, 'packages'), `${readFileSync(join(repo, 'packages'), 'utf8')}tpm2-tools\nage\ncpio\n`);
git('commit', '-qam', 'the tools to unseal');
const medium = build();
const hostKey = JSON.parse(readFileSync(join(medium.imageDir, 'manifest.json'), 'utf8')).hostKey;

async function boot(disk, serialLog) {
  const sshPort = await freePort();
  const vm = startVm({ disk, sshPort, httpPort: await freePort(), serialLog, tpm: true });
  try {
    return { vm, ms: await vm.waitForSsh(10 * 60_000), sshPort };
  } catch (err) {
    await vm.stop();
    throw err;
  }
}

// Enroll on a machine that runs the medium image; its TPM state then goes with the tpm disk.
const enrollDisk = join(root, 'enroll.img');
run('format', '--disk', enrollDisk, '--image', medium.imageDir);
const e = await boot(enrollDisk, join(root, 'enroll.log'));
run('secrets', 'enroll', '--repo', repo, '--state', join(root, 'state'), '--address', '127.0.0.1', '--port', String(e.sshPort), '--ssh-key', join(env.HOME, '.config/ramboot/id_ed25519'), '--host-key', hostKey);
await e.vm.stop();
const sealed = build();

const disks = { medium: join(root, 'medium.img'), tpm: join(root, 'tpm.img') };
run('format', '--disk', disks.medium, '--image', medium.imageDir);
run('format', '--disk', disks.tpm, '--image', sealed.imageDir);
cpSync(tpmStatePath(enrollDisk), tpmStatePath(disks.tpm), { recursive: true });

// The kernel log's copy of the line, which has the time since boot (the console also shows it without).
const stamp = (log, text) => Number(/^\[\s*([0-9.]+)\]/.exec(log.split('\n').find((l) => /^\[\s*[0-9.]+\]/.test(l) && l.includes(text)) ?? '')?.[1]);
const times = { medium: [], tpm: [], unseal: [] };
for (let i = 0; i < runs; i++) {
  for (const mode of ['medium', 'tpm']) {
    const serialLog = join(root, `${mode}-${i}.log`);
    const b = await boot(disks[mode], serialLog);
    await b.vm.stop();
    times[mode].push(b.ms / 1000);
    if (mode === 'tpm') {
      const log = readFileSync(serialLog, 'utf8');
      if (!log.includes('ramboot-sealed: secrets unsealed')) throw new Error(`boot ${i} did not unseal; serial log ${serialLog}`);
      times.unseal.push(stamp(log, 'ramboot-sealed: secrets unsealed') - stamp(log, 'ramboot-sealed: unsealing the secrets'));
    }
  }
}
const fmt = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return `min ${s[0].toFixed(1)} s, median ${s[Math.floor(s.length / 2)].toFixed(1)} s, max ${s.at(-1).toFixed(1)} s`;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`boot to SSH, ${runs} cold starts each, TCG, one core:`);
console.log(`  secrets.at_rest: medium  ${fmt(times.medium)}`);
console.log(`  secrets.at_rest: tpm     ${fmt(times.tpm)}  (+${(((median(times.tpm) - median(times.medium)) / median(times.medium)) * 100).toFixed(1)}% median)`);
console.log(`  unsealing at boot (tpm2 primary, load, unseal, age, cpio): ${times.unseal.map((t) => `${t.toFixed(2)} s`).join(', ')}`);
