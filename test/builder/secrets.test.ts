import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { SHARED_STATE, buildRepo, initRepo, ramboot, tempDir, type Built } from '../helpers/ramboot.js';

// Secrets are decrypted in memory and written only into secrets.cpio.zst: a scan of
// everything else the build touched (image, caches, temporary directories, logs) must
// not find the plaintext.

describe('a build with secrets', () => {
  const marker = `ramboot-plaintext-${randomBytes(12).toString('hex')}`;
  let built: Built;
  let logs: string;
  let plaintextFile: string;
  let password: string;

  beforeAll(async () => {
    const { repo, home, env } = await initRepo('debian');
    // The console password `ramboot init` made, read as its user would.
    password = execFileSync('age', ['-d', '-i', join(home, '.config/ramboot/identity.txt'), join(repo, 'secrets/etc/ramboot/passwords/root.age')], { encoding: 'utf8' }).trim();
    plaintextFile = join(tempDir('plain'), 'token');
    writeFileSync(plaintextFile, `${marker}\n`, { mode: 0o600 });
    const add = await ramboot(['secrets', 'add', 'etc/app/token', '--from', plaintextFile, '--repo', repo], env);
    expect(add.exitCode, add.stderr).toBe(0);
    execFileSync('git', ['-C', repo, 'add', '-A']);
    execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'token']);
    const images = join(tempDir('images'), 'images');
    const r = await ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', images, '--json'], { ...env, RAMBOOT_LOG_LEVEL: 'debug' });
    expect(r.exitCode, r.stderr).toBe(0);
    built = JSON.parse(r.stdout);
    logs = r.stdout + r.stderr;
  });

  it('puts the plaintext in the secrets segment, 0600, in a 0700 image directory', () => {
    const secrets = join(built.imageDir, 'secrets.cpio.zst');
    expect(statSync(secrets).mode & 0o777).toBe(0o600);
    expect(statSync(built.imageDir).mode & 0o777).toBe(0o700);
    expect(execFileSync('zstd', ['-dc', secrets]).includes(marker)).toBe(true);
  });

  it('puts root\'s console password in the secrets segment as its SHA-512 crypt hash only, and nowhere else', () => {
    const secrets = execFileSync('zstd', ['-dc', join(built.imageDir, 'secrets.cpio.zst')]);
    const hash = /\$6\$([./0-9A-Za-z]{16})\$[./0-9A-Za-z]{86}/.exec(secrets.toString('latin1'));
    expect(hash, 'a $6$ hash in the secrets segment').not.toBeNull();
    expect(execFileSync('openssl', ['passwd', '-6', '-salt', hash![1]!, '-stdin'], { input: password, encoding: 'utf8' }).trim()).toBe(hash![0]);
    expect(secrets.includes(password), 'the password itself in the secrets segment').toBe(false);
    for (const seg of ['base.cpio.zst', 'overlay.cpio.zst']) {
      const data = execFileSync('zstd', ['-dc', join(built.imageDir, seg)], { maxBuffer: 2 ** 30 });
      expect(data.includes(password) || data.includes(hash![0]), seg).toBe(false);
    }
    expect(logs.includes(password)).toBe(false);
    const entry = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8')).files.find((f: { path: string }) => f.path === 'etc/ramboot/passwords/root');
    expect(entry).toMatchObject({ mode: 0o600, segment: 'secrets', size: hash![0].length + 1 });
  });

  it('leaves no plaintext in the other segments, the manifest, the caches, temporary directories or logs', () => {
    expect(logs.includes(marker)).toBe(false);
    for (const seg of ['base.cpio.zst', 'overlay.cpio.zst']) {
      expect(execFileSync('zstd', ['-dc', join(built.imageDir, seg)], { maxBuffer: 2 ** 30 }).includes(marker), seg).toBe(false);
    }
    const manifest = readFileSync(join(built.imageDir, 'manifest.json'), 'utf8');
    expect(manifest.includes(marker)).toBe(false);
    const secretEntry = JSON.parse(manifest).files.find((f: { path: string }) => f.path === 'etc/app/token');
    expect(secretEntry).toMatchObject({ path: 'etc/app/token', mode: 0o600, segment: 'secrets' });
    expect(secretEntry.sha256).toBeUndefined();
    const hits = [SHARED_STATE, tmpdir(), '/dev/shm'].flatMap((d) => scan(d, marker)).filter((f) => f !== plaintextFile && !f.endsWith('secrets.cpio.zst'));
    expect(hits).toEqual([]);
    // It reads every file of the shared caches and of /tmp, whose size no test controls.
  }, 5 * 60_000);
});

/** Every regular file under dir whose bytes contain the marker; like `find -xdev`, no symlinks followed. */
function scan(dir: string, marker: string): string[] {
  const hits: string[] = [];
  const dev = lstatSync(dir).dev;
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      let st;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.dev !== dev) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size < 512 * 2 ** 20 && existsSync(p) && readFileSync(p).includes(marker)) hits.push(p);
    }
  };
  walk(dir);
  return hits;
}
