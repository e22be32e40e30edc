// What distributing an image through an OCI registry costs: publish image A, publish B,
// then a site pulls A and B; printed: the bytes sent and pulled for each and the time.
// B is meant to be A after a change (a root/-only change, a package): the figure is what
// a site fetches for it against the whole image. Starts Debian's docker-registry on
// loopback. Build first: `npx tsc`.
// Usage: node bench/registry.mjs IMAGE_DIR_A IMAGE_DIR_B
//   e.g. two `ramboot build --images DIR` of commits that differ in root/.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { imageDirs, parseRef, publish, pull } from '../dist/image/oci.js';
import { decrypt, encrypt } from '../dist/secrets/age.js';
import { readIdentityFile } from '../dist/secrets/identity.js';

const [a, b] = process.argv.slice(2).map((d) => d && resolve(d));
if (!a || !b) {
  console.error('usage: node bench/registry.mjs IMAGE_DIR_A IMAGE_DIR_B');
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'ramboot-bench-registry-'));
const mib = (n) => `${(n / 1024 / 1024).toFixed(2)} MiB`;
const port = await new Promise((res) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => res(port));
  });
});
writeFileSync(join(work, 'config.yml'), `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${work}/storage\nhttp:\n  addr: 127.0.0.1:${port}\n`);
const registry = spawn('docker-registry', ['serve', join(work, 'config.yml')], { stdio: 'ignore' });
try {
  for (let i = 0; !(await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false)); i++) {
    if (i > 100) throw new Error('docker-registry did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
  execFileSync('age-keygen', ['-o', join(work, 'identity.txt')], { stdio: 'ignore' });
  const recipient = execFileSync('age-keygen', ['-y', join(work, 'identity.txt')], { encoding: 'utf8' }).trim();
  const identities = await readIdentityFile(join(work, 'identity.txt'));
  const ref = parseRef(`127.0.0.1:${port}/bench/nas:main`);
  const whole = (dir) => {
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
    return [m.kernel, m.ucode, ...m.segments].filter(Boolean).reduce((n, f) => n + f.bytes, 0);
  };
  const site = join(work, 'site');
  for (const [name, dir] of [['A', a], ['B', b]]) {
    let t = performance.now();
    const pushed = await publish(dir, ref, { seal: (p) => encrypt(p, [recipient]) });
    const pushMs = performance.now() - t;
    t = performance.now();
    const got = await pull(ref, site, { unseal: (s) => decrypt(s, identities), have: imageDirs(site) });
    const pullMs = performance.now() - t;
    console.log(
      `${name}: image ${mib(whole(dir))}; publish sent ${pushed.blobs} blob(s), ${mib(pushed.bytes)} in ${(pushMs / 1000).toFixed(1)} s; ` +
        `the site pulled ${got.blobs} blob(s), ${mib(got.bytes)} (${((100 * got.bytes) / whole(dir)).toFixed(2)}% of the image) in ${(pullMs / 1000).toFixed(1)} s`,
    );
  }
} finally {
  registry.kill();
  rmSync(work, { recursive: true, force: true });
}
