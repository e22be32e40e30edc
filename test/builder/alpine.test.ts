import { execa } from 'execa';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootImage, KVER, machineFiles, type BootedMachine } from '../helpers/alpine-machine.js';
import { alpineConfig, commitAll, HELLO_PAGE, localMirror, makeRepo } from '../helpers/apk.js';
import { CLI, SHARED_STATE, tempDir, type Built } from '../helpers/ramboot.js';

// The tests' local apk mirror lives in the shared test state: the operator allows it there.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

// Alpine offline: the fixtures' minirootfs and a local apk repository of a package the
// test makes itself, built with no network at all, then booted under qemu with a Debian
// cloud kernel and its virtio modules carried in the repository's own root/.

describe('an Alpine machine built offline from a local apk repository', () => {
  let repo: string;
  let work: string;
  let built: Built;
  let manifest: { packages: { name: string; version: string }[]; append: string; buildId: string };
  let machine: BootedMachine;

  beforeAll(async () => {
    repo = makeRepo(machineFiles(alpineConfig(localMirror())));
    work = tempDir('alpine');
    // No network at all: a new network namespace has only a loopback device, and it is down.
    const r = await execa(
      'unshare',
      ['--net', 'node', CLI, 'build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images'), '--json'],
      { reject: false, stdin: 'ignore' },
    );
    if (r.exitCode !== 0) throw new Error(`ramboot build failed (${r.exitCode}): ${String(r.stderr).slice(-3000)}`);
    built = JSON.parse(String(r.stdout)) as Built;
    manifest = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8'));

    machine = await bootImage(built.imageDir, built.buildId, work);
  });

  afterAll(async () => {
    await machine?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    // The repository carries a 14 MB kernel: do not leave it in /tmp.
    if (repo) rmSync(dirname(repo), { recursive: true, force: true });
  });

  it('records the test package and its version in the manifest', () => {
    expect(manifest.packages).toContainEqual({ name: HELLO_PAGE.name, version: HELLO_PAGE.version });
    expect(manifest.packages.map((p) => p.name)).toContain('busybox');
    expect(built.segments.map((s) => s.name)).toEqual(['base', 'overlay', 'secrets']);
  });

  it('boots and serves the package\'s file, and what setup.sh wrote, over HTTP', async () => {
    const body = await machine.get('/hello');
    expect(body).toContain('hello from the hello-page package, version 1.2.3');
    expect(body).toContain(`setup.sh ran in build ${built.buildId}`);
    // The kernel and NIC driver from root/ brought the network up as rc.ramboot says.
    const log = machine.serial();
    expect(log).toContain(`Linux version ${KVER.split('-cloud')[0]}`);
    expect(log).toMatch(/RAMBOOT-ALPINE-UP .*inet 10\.0\.2\.15\/24/);
  });

  it('runs the build it was given', async () => {
    const body = await machine.get('/release');
    expect(body).toContain(`build=${built.buildId}`);
  });

  it('reuses the package stage when only root/ changes', async () => {
    writeFileSync(join(repo, 'root/etc/motd'), 'changed\n');
    commitAll(repo, 'root/ only');
    const r = await execa('node', [CLI, 'build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images2'), '--json'], { reject: false, stdin: 'ignore' });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const next = JSON.parse(String(r.stdout)) as Built;
    expect(next.stageReused).toBe(true);
    expect(next.segments[0]!.sha256).toBe(built.segments[0]!.sha256);
  });
});
