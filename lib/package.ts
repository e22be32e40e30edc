import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Files that ship with ramboot (the trial agent, repo-template/, examples/) are found
// from the package root, the nearest directory holding package.json: the same from the
// sources (tests) and from dist/ (installed).

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  // stat, not existsSync: that is access(2), which drops the capabilities of a process not
  // running as root, and such a process (one refused with "must run as root") may still
  // read a package cloned into a 0700 directory by CAP_DAC_READ_SEARCH.
  while (!statSync(join(dir, 'package.json'), { throwIfNoEntry: false })) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`ramboot's package.json not found above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

export const PACKAGE_ROOT = findRoot();

/** A file or directory of the ramboot package, by its path from the package root. */
export function packagePath(...parts: string[]): string {
  return join(PACKAGE_ROOT, ...parts);
}

export const RAMBOOT_VERSION = (JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { version: string }).version;
