import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alpineConfig, commitAll, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { expectNothingLeft as expectLeftNothing } from '../helpers/leftovers.js';
import { CLI, ramboot, SHARED_STATE, tempDir, type CliResult } from '../helpers/ramboot.js';

// The tests' local apk mirror lives in the shared test state: the operator allows it there.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

// Bad input fails with a message that says what is wrong, and leaves nothing behind:
// no image published, no half-written directories, no mounts. Alpine offline (the
// fixtures' minirootfs and a local apk repository) keeps each case to seconds.

describe('a build with bad input', () => {
  let mirror: string;
  /** This file's own state: its package stage is shared by the cases, its mounts are its own. */
  let state: string;
  let work: string;

  beforeAll(async () => {
    mirror = localMirror();
    state = tempDir('errors-state');
    work = tempDir('errors');
    // A good build first: the cases below reuse its package stage.
    const ok = makeRepo(minimalAlpineFiles(mirror));
    const r = await build(ok, join(work, 'images-ok'));
    expect(r.exitCode, r.stderr).toBe(0);
  });

  afterAll(() => {
    // Only when nothing is mounted there: a leftover bind mount of /dev must not be emptied.
    if (state && !readFileSync('/proc/mounts', 'utf8').includes(state)) rmSync(state, { recursive: true, force: true });
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  function build(repo: string, images: string, extra: string[] = []): Promise<CliResult> {
    return ramboot(['build', '--repo', repo, '--state', state, '--images', images, ...extra]);
  }

  /** The message the user sees: the last thing ramboot writes, after its progress. */
  const message = (r: CliResult) => r.stderr.slice(r.stderr.lastIndexOf('ramboot build:'));

  const expectNothingLeft = (images: string) => expectLeftNothing(state, images, [state, work]);

  async function failing(files: Record<string, string | [string, number]>, remove: string[] = [], extra: string[] = []) {
    const repo = makeRepo(minimalAlpineFiles(mirror));
    for (const f of remove) rmSync(join(repo, f));
    writeFiles(repo, files);
    if (remove.length > 0 || Object.keys(files).length > 0) commitAll(repo, 'bad input');
    const images = join(work, `images-${Math.random().toString(36).slice(2)}`);
    const r = await build(repo, images, extra);
    expect(r.exitCode, r.stderr).not.toBe(0);
    // An expected fault is a message, never a stack trace.
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expectNothingLeft(images);
    return { r, msg: message(r), repo };
  }

  it('rejects an unsupported distro in ramboot.yaml, naming the file, line and key and the choices', async () => {
    const yaml = alpineConfig(mirror).replace('  name: alpine\n', '  name: gentoo\n');
    const line = yaml.split('\n').indexOf('  name: gentoo') + 1;
    const { msg } = await failing({ 'ramboot.yaml': yaml });
    expect(msg).toContain(`ramboot.yaml, line ${line}, key distro.name`);
    expect(msg).toContain('"alpine"');
    expect(msg).toContain('"debian"');
  });

  it('rejects an unknown key in ramboot.yaml and lists the keys allowed there', async () => {
    const yaml = alpineConfig(mirror).replace('boot:\n', 'boot:\n  kernal: vmlinuz\n');
    const line = yaml.split('\n').indexOf('  kernal: vmlinuz') + 1;
    const { msg } = await failing({ 'ramboot.yaml': yaml });
    expect(msg).toContain(`ramboot.yaml, line ${line}, key boot.kernal`);
    expect(msg).toMatch(/unknown key; allowed here: .*kernel/);
  });

  it('shows the package manager\'s own message for a package that does not exist', async () => {
    const { msg } = await failing({ packages: 'hello-page\nno-such-package\n' });
    expect(msg).toContain('install Alpine packages');
    expect(msg).toContain('unable to select packages');
    expect(msg).toContain('no-such-package (no such package)');
  });

  it('shows the last lines of a failing setup.sh and its exit code', async () => {
    const { msg } = await failing({ 'setup.sh': ['#!/bin/sh\necho "preparing"\necho "marker-xyz: about to fail"\nexit 3\n', 0o755] });
    expect(msg).toContain('failed to run setup.sh: it exited with 3');
    expect(msg).toContain('marker-xyz: about to fail');
  });

  it('says no kernel was found in /boot and names boot.kernel', async () => {
    const { msg } = await failing({}, ['root/boot/vmlinuz-test']);
    expect(msg).toContain('failed to find a kernel');
    expect(msg).toContain('/boot');
    expect(msg).toContain('boot.kernel');
    expect(msg).toContain('vmlinuz-*');
  });

  it('says which revision it could not resolve', async () => {
    const { r, msg } = await failing({}, [], ['--rev', 'nope']);
    expect(r.exitCode).toBe(1);
    expect(msg).toContain('failed to resolve revision "nope"');
  });

  it('refuses to run as a user other than root', async () => {
    const repo = makeRepo(minimalAlpineFiles(mirror));
    const images = join(work, 'images-nobody');
    // Only CAP_DAC_READ_SEARCH is kept, so the unprivileged process can read the project
    // wherever it was cloned (a 0700 temporary directory, say) and is still not root.
    const reader = ['--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search'];
    const r = await execa(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', ...reader, 'node', CLI, 'build', '--repo', repo, '--state', state, '--images', images],
      { reject: false, stdin: 'ignore' },
    );
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toContain('must run as root');
    expectNothingLeft(images);
  });
});
