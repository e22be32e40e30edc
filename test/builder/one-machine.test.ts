import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../lib/package.js';
import { keyedAlpineRepo } from '../helpers/apk.js';
import { tempDir } from '../helpers/ramboot.js';

// A one-machine repository (no machines/) is what it was before ramboot knew several
// machines: the ramboot of the last commit before them and this one build the same
// commit into the same bytes. So a controller upgraded across that change finds the
// machine running the build it would make, and deploys nothing. That ramboot is
// test/fixtures/ramboot-51b25d4.tar.xz, `git archive` of its sources (builder, controller,
// deploy, image, lib, plan, secrets, vm, tsconfig.json, package.json) at 51b25d4, main
// just before several machines were merged (1f1c22d); it is compiled here.

const BEFORE_MACHINES = join(PACKAGE_ROOT, 'test/fixtures/ramboot-51b25d4.tar.xz');
const BEFORE_MACHINES_SHA256 = 'dc0db80d75ca7039cee2f597fe59750c44c0ddacb245c64d4e4740f549046441';
const MINUTES = 60_000;

describe('a one-machine repository, built by the ramboot before several machines and by this one', () => {
  let oldCli: string;

  beforeAll(async () => {
    expect(createHash('sha256').update(readFileSync(BEFORE_MACHINES)).digest('hex')).toBe(BEFORE_MACHINES_SHA256);
    const dir = tempDir('ramboot-before-machines');
    execFileSync('tar', ['-xJf', BEFORE_MACHINES, '-C', dir]);
    const old = join(dir, 'ramboot');
    symlinkSync(join(PACKAGE_ROOT, 'node_modules'), join(old, 'node_modules'));
    await execa('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: old });
    oldCli = join(old, 'dist/controller/cli.js');
  }, 10 * MINUTES);

  it('builds the same build id and the same bytes in every file of the image', async () => {
    const { repo, env } = await keyedAlpineRepo();
    const built = async (cli: string, name: string) => {
      // A state and a cache of its own: nothing one build made is taken by the other.
      const state = tempDir(`one-machine-${name}`);
      const images = join(state, 'images');
      mkdirSync(images, { recursive: true });
      const { RAMBOOT_CACHE: _shared, ...rest } = process.env;
      const r = await execa('node', [cli, 'build', '--repo', repo, '--state', state, '--images', images, '--json'], { env: { ...rest, ...env }, extendEnv: false, reject: false });
      if (r.exitCode !== 0) throw new Error(`${name} ramboot build failed (${r.exitCode}): ${r.stderr.slice(-3000)}`);
      const { buildId, imageDir } = JSON.parse(r.stdout) as { buildId: string; imageDir: string };
      return { buildId, imageDir };
    };
    const before = await built(oldCli, 'before');
    const now = await built(join(PACKAGE_ROOT, 'dist/controller/cli.js'), 'now');
    expect(now.buildId).toBe(before.buildId);
    const files = readdirSync(before.imageDir).sort();
    expect(readdirSync(now.imageDir).sort()).toEqual(files);
    expect(files).toContain('manifest.json');
    for (const f of files) {
      expect(existsSync(join(now.imageDir, f))).toBe(true);
      expect(readFileSync(join(now.imageDir, f)).equals(readFileSync(join(before.imageDir, f))), f).toBe(true);
    }
  }, 10 * MINUTES);
});
