import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alpineConfig, commitAll, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { ramboot, SHARED_STATE, tempDir, type CliResult } from '../helpers/ramboot.js';

// What a commit names in distro.* reaches the build host: mmdebstrap's command line, and
// on Alpine a local mirror directory bound into apk's sandbox. A string that would read
// as an option is refused before anything runs, and a local mirror is used only inside
// the repository or under a directory the operator allows ($RAMBOOT_MIRRORS).

describe('distro.* from a commit', () => {
  let work: string;

  beforeAll(() => {
    work = tempDir('inputs');
  });

  afterAll(() => {
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  function build(repo: string, env: Record<string, string>): Promise<CliResult> {
    const images = join(work, `images-${randomBytes(4).toString('hex')}`);
    return ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', images, '--json'], env);
  }

  /** The message the user sees: the last thing ramboot writes, after its progress. */
  const message = (r: CliResult) => r.stderr.slice(r.stderr.lastIndexOf('ramboot build:'));

  it('refuses a distro.mirror of "--setup-hook=touch …" before mmdebstrap runs: the command never runs', async () => {
    const touched = join(work, `touched-${randomBytes(6).toString('hex')}`);
    const repo = makeRepo({
      'ramboot.yaml': `host:\n  name: nas\ndistro:\n  name: debian\n  mirror: --setup-hook=touch ${touched}\n`,
      packages: 'busybox\n',
    });
    const r = await build(repo, {});
    expect(r.exitCode).toBe(1);
    expect(message(r)).toContain('ramboot.yaml, line 5, key distro.mirror');
    expect(r.stderr).not.toContain('installing packages');
    expect(existsSync(touched)).toBe(false);
  }, 10 * 60_000);

  describe('a local Alpine mirror', () => {
    const mirrorError = 'is neither inside the repository nor under a directory RAMBOOT_MIRRORS allows';

    it('is refused outside the repository unless RAMBOOT_MIRRORS allows its directory, naming distro.mirror and the fix', async () => {
      const repo = makeRepo(minimalAlpineFiles(localMirror()));
      const r = await build(repo, { RAMBOOT_MIRRORS: '' });
      expect(r.exitCode).toBe(1);
      expect(message(r)).toContain(`failed to use distro.mirror ${localMirror()} (ramboot.yaml)`);
      expect(message(r)).toContain(mirrorError);
      expect(message(r)).toContain('RAMBOOT_MIRRORS=/srv/apk');
      expect(r.stderr).not.toContain('Installing');
      const allowed = await build(repo, { RAMBOOT_MIRRORS: `/nonexistent:${SHARED_STATE}` });
      expect(allowed.exitCode, allowed.stderr.slice(-2000)).toBe(0);
    }, 10 * 60_000);

    it('is refused when a relative path or a symlink in the repository leads out of it', async () => {
      const files = minimalAlpineFiles(localMirror());
      const repo = makeRepo({ ...files, 'ramboot.yaml': alpineConfig('../../../../../../../etc') });
      const up = await build(repo, { RAMBOOT_MIRRORS: '' });
      expect(up.exitCode).toBe(1);
      expect(message(up)).toContain('failed to use distro.mirror ../../../../../../../etc (ramboot.yaml): /etc');
      symlinkSync('/etc', join(repo, 'mirror'));
      writeFiles(repo, { 'ramboot.yaml': alpineConfig('mirror') });
      commitAll(repo, 'a mirror that links out of the repository');
      const linked = await build(repo, { RAMBOOT_MIRRORS: '' });
      expect(linked.exitCode).toBe(1);
      expect(message(linked)).toContain(`failed to use distro.mirror mirror (ramboot.yaml): /etc ${mirrorError}`);
    });

    it('is used inside the repository (a relative path) with no RAMBOOT_MIRRORS', async () => {
      const repo = makeRepo({ ...minimalAlpineFiles(localMirror()), 'ramboot.yaml': alpineConfig('apk') });
      cpSync(localMirror(), join(repo, 'apk'), { recursive: true });
      commitAll(repo, 'the mirror in the repository');
      const r = await build(repo, { RAMBOOT_MIRRORS: '' });
      expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
      const { imageDir } = JSON.parse(r.stdout) as { imageDir: string };
      const manifest = JSON.parse(readFileSync(join(imageDir, 'manifest.json'), 'utf8')) as { packages: { name: string }[] };
      expect(manifest.packages.map((p) => p.name)).toContain('hello-page');
    }, 10 * 60_000);
  });
});
