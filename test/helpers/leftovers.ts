import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

// What a failed build must not leave: a published image, half-made package stages,
// build work directories, mounts.

/** Asserts that a failed build under `state` left nothing behind: `images` is empty, nothing is mounted under `roots`. */
export function expectNothingLeft(state: string, images: string, roots: string[] = [state]): void {
  expect(existsSync(images) ? readdirSync(images) : [], 'images directory').toEqual([]);
  const stages = join(state, 'cache', 'stages');
  expect(existsSync(stages) ? readdirSync(stages).filter((n) => n.startsWith('.tmp')) : [], 'half-made package stages').toEqual([]);
  const tmp = join(state, 'cache', 'tmp');
  expect(existsSync(tmp) ? readdirSync(tmp) : [], 'build work directories').toEqual([]);
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => roots.some((r) => m.startsWith(r)));
  expect(mounts, 'mounts left under the state directory').toEqual([]);
}
