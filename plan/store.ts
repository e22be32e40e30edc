import { createHash, type Hash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Source } from '../builder/source.js';
import { readManifestSync, type Manifest } from '../image/manifest.js';
import { packagePath, RAMBOOT_VERSION } from '../lib/package.js';

// The images `ramboot plan` built (without secrets), kept so that the next plan of a
// pull request need not build its base again: a push to a pull request plans against
// the same base. An image is reused only when a build now would make the same one: the
// same ramboot code built it (the store is per code fingerprint), from the same commit,
// with the packages the head was just built with (so a stage refreshed since, or a
// change to the packages, builds the base anew).

/** Images kept besides the ones a plan uses: a few pull requests' worth. */
const KEEP = 4;

/** Everything that makes an image: ramboot's builder, image and lib code as installed, and the trial agent's files. */
function codeFingerprint(): string {
  const h = createHash('sha256');
  const dirs = ['../builder/', '../image/', '../lib/'].map((d) => fileURLToPath(new URL(d, import.meta.url)));
  for (const dir of [...dirs, packagePath('image', 'agent')]) hashTree(h, dir);
  return h.update(RAMBOOT_VERSION).digest('hex').slice(0, 16);
}

function hashTree(h: Hash, dir: string): void {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) hashTree(h, path);
    else h.update(name).update('\0').update(readFileSync(path)).update('\0');
  }
}

/** A store of other code is removed once unused this long (a plan of that code may still be running). */
const STALE_MS = 3_600_000;

/** The store's directory for this ramboot; those of other versions of the code go once stale. */
export function planStore(stateDir: string): string {
  const root = join(stateDir, 'plan');
  const fingerprint = codeFingerprint();
  if (existsSync(root)) {
    for (const name of readdirSync(root)) {
      const path = join(root, name);
      if (name !== fingerprint && Date.now() - statSync(path).mtimeMs > STALE_MS) rmSync(path, { recursive: true, force: true });
    }
  }
  const dir = join(root, fingerprint);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** build.ts's inputs hash: ramboot's version, the commit's tree, the installed packages. */
function inputsHash(tree: string, packages: Manifest['packages']): string {
  return createHash('sha256').update(JSON.stringify({ ramboot: RAMBOOT_VERSION, tree, packages })).digest('hex');
}

/** An image this ramboot reads, or undefined. */
function manifestOf(dir: string): Manifest | undefined {
  try {
    return readManifestSync(dir);
  } catch {
    return undefined;
  }
}

/** The image of `base` in the store that a build now would make, given the head's freshly built manifest. */
export function builtBefore(store: string, base: Source, head: Manifest): string | undefined {
  const want = inputsHash(base.treeHash, head.packages);
  for (const name of readdirSync(store)) {
    if (name.startsWith('.')) continue;
    const m = manifestOf(join(store, name));
    if (m && m.commit === base.commit && m.inputsHash === want) return join(store, name);
  }
  return undefined;
}

/** Keeps the images just used and the most recently used others; marks the used ones as just used. */
export function keepRecent(store: string, used: string[]): void {
  const now = new Date();
  for (const dir of [store, ...used]) utimesSync(dir, now, now);
  const others = readdirSync(store)
    .filter((n) => !n.startsWith('.'))
    .map((n) => join(store, n))
    .filter((p) => !used.includes(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  for (const old of others.slice(KEEP)) rmSync(old, { recursive: true, force: true });
}
