import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Caches are keyed by what makes them: the inputs, and the code that turns the inputs
// into the cached thing. A changed recipe (how a stage is installed, how a segment is
// packed) then misses the cache by itself, so a machine with warm caches builds what a
// fresh machine builds; no version number to remember to bump.

/** sha256 of the source files of the given modules (each passes its own import.meta.url). */
export function recipeHash(...moduleUrls: string[]): string {
  const h = createHash('sha256');
  for (const url of [...moduleUrls].sort()) h.update(url.split('/').pop()!).update('\0').update(readFileSync(fileURLToPath(url))).update('\0');
  return h.digest('hex');
}
