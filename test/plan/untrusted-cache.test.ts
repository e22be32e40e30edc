import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commitAll, git, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { ramboot, SHARED_STATE, tempDir } from '../helpers/ramboot.js';

// `ramboot plan` builds a pull request's commits: what they put in a package stage or a
// base segment must never serve a trusted build. A plan builds with a cache of its own
// (<cache>/untrusted-plans), and the controller's cache is left as it was.

process.env.RAMBOOT_MIRRORS = SHARED_STATE;

/** Each entry of dir with its mtime: what "untouched" means for a cache directory. */
function snapshot(dir: string): Record<string, number> {
  if (!existsSync(dir)) return {};
  return Object.fromEntries(readdirSync(dir).map((n) => [n, statSync(join(dir, n)).mtimeMs]));
}

describe('a plan of a pull request', () => {
  let work: string;

  beforeAll(() => {
    work = tempDir('plan-cache');
  });

  afterAll(() => {
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  it('builds with a cache of its own and leaves the trusted cache\'s package stages and bases untouched', async () => {
    const state = join(work, 'state');
    const repo = makeRepo(minimalAlpineFiles(localMirror()));
    const base = git(repo, 'rev-parse', 'HEAD').trim();
    const trusted = await ramboot(['build', '--repo', repo, '--state', state, '--images', join(work, 'images'), '--json']);
    expect(trusted.exitCode, trusted.stderr.slice(-2000)).toBe(0);
    const cache = join(state, 'cache');
    const stages = snapshot(join(cache, 'stages'));
    const bases = snapshot(join(cache, 'base'));
    expect(Object.keys(stages)).toHaveLength(1);

    writeFiles(repo, { packages: 'hello-page\nhello-extra\n' });
    const head = commitAll(repo, 'a package added');
    const plan = await ramboot(['plan', base, head, '--repo', repo, '--state', state, '--format', 'json']);
    expect(plan.exitCode, plan.stderr.slice(-2000)).toBe(2);

    expect(snapshot(join(cache, 'stages'))).toEqual(stages);
    expect(snapshot(join(cache, 'base'))).toEqual(bases);
    // Both commits' stages were made in the plan's cache, the base's too, though the trusted cache had it.
    const planStages = readdirSync(join(cache, 'untrusted-plans', 'stages'));
    expect(planStages).toEqual(expect.arrayContaining(Object.keys(stages)));
    expect(planStages).toHaveLength(2);
  }, 10 * 60_000);
});
