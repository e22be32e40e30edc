import { createHash } from 'node:crypto';
import { existsSync, readdirSync, realpathSync, renameSync } from 'node:fs';
import { makePrivateDir } from '../lib/private-file.js';
import { basename, join, relative, resolve } from 'node:path';
import { removeBuildDir } from '../builder/sweep.js';
import { MACHINES_DIR } from '../lib/config.js';
import { UsageError } from '../lib/errors.js';
import { redactUrl } from '../lib/net.js';
import { run } from '../lib/run.js';

// Where ramboot keeps what it makes: never in the user's working tree (a build mounts
// an overlay of the new root in its temporary directory, and anything walking the tree
// would follow it). A root service's conventional places, one directory per machine
// repository so that two repositories never share a journal:
//   /var/lib/ramboot/<repository's name>-<hash of the repository's path or URL>/
//     images/  deploy.jsonl  deploy.lock  history/  vm/
//   /var/lib/ramboot/<repository's name>.<machine>-<hash>/   the same, for each machine
//     of a repository of several (whose own directory keeps the branch and trust policy)
//   /var/cache/ramboot/   package stages, base segments, downloads, build temporaries
// --state DIR (or $RAMBOOT_STATE) puts both in DIR (the cache in DIR/cache, a machine's
// state in DIR/machines/NAME);
// $RAMBOOT_CACHE names the cache on its own (machines of one host share package stages).

export const STATE_ROOT = '/var/lib/ramboot';
export const CACHE_ROOT = '/var/cache/ramboot';

export interface MachineState {
  /** The machine's directory: journal, lock, history, the virtual NAS. */
  dir: string;
  images: string;
  cache: string;
  vm: string;
}

/** A repository's identity: its real path, or its URL without credentials (as builds record it). */
export function originOf(repoOrUrl: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(repoOrUrl)) return redactUrl(repoOrUrl);
  try {
    return realpathSync(repoOrUrl);
  } catch {
    return resolve(repoOrUrl);
  }
}

/**
 * The state directory's name. It depends on how the controller was started (the
 * repository's path or URL), never on a commit: the signing policy, the quarantine and
 * the journal live there, so a commit that could choose it (as host.name once did) could
 * make a restarted controller forget them.
 */
export function machineKey(origin: string, machine?: string): string {
  const name = basename(origin.replace(/\/+$/, '')).replace(/\.git$/, '').replace(/[^A-Za-z0-9._-]/g, '_') || 'repo';
  // A machine's key hashes another string than the repository's: an older directory found by its hash suffix is never taken for it.
  return machine ? `${name}.${machine}-${originHash(`${origin}#${machine}`)}` : `${name}-${originHash(origin)}`;
}

function originHash(origin: string): string {
  return createHash('sha256').update(origin).digest('hex').slice(0, 8);
}

export interface StateRequest {
  /** --state, else $RAMBOOT_STATE. */
  state?: string;
  origin: string;
  /** The machine, in a repository that describes several: each has a state directory of its own. */
  machine?: string;
  /** The working tree, when there is one: state may not live inside it. */
  workTree?: string;
}

/** Where caches go, which does not depend on the machine: downloads, stages, mirrors of remotes. */
export function cacheRoot(stateFlag?: string): string {
  const explicit = stateFlag ?? process.env.RAMBOOT_STATE;
  return resolve(process.env.RAMBOOT_CACHE ?? (explicit ? join(explicit, 'cache') : CACHE_ROOT));
}

export function machineState(r: StateRequest): MachineState {
  const explicit = r.state ?? process.env.RAMBOOT_STATE;
  // Under --state, machines/NAME: a machine named like one of the repository's own entries (images, cache, vm) stays apart from them.
  const dir = explicit ? resolve(explicit, ...(r.machine ? [MACHINES_DIR, r.machine] : [])) : r.machine ? join(STATE_ROOT, machineKey(r.origin, r.machine)) : keyedDir(r.origin);
  const cache = cacheRoot(r.state);
  if (r.workTree) {
    for (const d of [dir, cache]) {
      if (inside(d, r.workTree)) {
        throw new UsageError(
          `failed to use ${d} for ramboot's state: it is inside the repository ${r.workTree}, and builds mount /proc there; choose a directory outside it (--state)`,
          { step: 'state', input: d },
        );
      }
    }
  }
  return { dir, images: join(dir, 'images'), cache, vm: join(dir, 'vm') };
}

/**
 * STATE_ROOT/<machineKey>; a directory that an earlier version named after the head
 * commit's host.name (<host>-<same hash>) is taken over, renamed, so nothing is lost.
 */
function keyedDir(origin: string): string {
  const dir = join(STATE_ROOT, machineKey(origin));
  if (existsSync(dir) || !existsSync(STATE_ROOT)) return dir;
  const suffix = `-${originHash(origin)}`;
  const older = readdirSync(STATE_ROOT).filter((n) => n.endsWith(suffix));
  if (older.length === 1) renameSync(join(STATE_ROOT, older[0]!), dir);
  return dir;
}

function inside(dir: string, tree: string): boolean {
  const rel = relative(resolve(tree), resolve(dir));
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'));
}

/**
 * Earlier versions kept state in REPO/.ramboot. It is moved to the machine's state
 * directory (images, journal, the virtual NAS) and the cache; an interrupted build's
 * mounts below it are undone first. Returns a notice, or undefined when there was none.
 */
export async function migrateLegacyState(workTree: string, host: string, state: MachineState): Promise<string | undefined> {
  const legacy = join(workTree, '.ramboot');
  if (!existsSync(legacy)) return undefined;
  await removeBuildDir(join(legacy, 'tmp'), { emit: () => {} });
  const moves: [string, string][] = [
    [join(legacy, 'images'), state.images],
    [join(legacy, 'vm'), state.vm],
    [join(legacy, 'state', host, 'deploy.jsonl'), join(state.dir, 'deploy.jsonl')],
    ...(existsSync(join(legacy, 'cache')) ? readdirSync(join(legacy, 'cache')).map((n): [string, string] => [join(legacy, 'cache', n), join(state.cache, n)]) : []),
  ];
  makePrivateDir(state.dir);
  makePrivateDir(state.cache);
  for (const [from, to] of moves) {
    if (!existsSync(from) || existsSync(to)) continue;
    try {
      renameSync(from, to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      // Another file system: package stages hold device nodes, which only cp -a copies.
      await run('cp', ['-a', from, to], { step: `move ${from} to ${to}` });
    }
  }
  await removeBuildDir(legacy, { emit: () => {} });
  return `ramboot: moved ${legacy} to ${state.dir} (state) and ${state.cache} (caches): state no longer lives in the repository`;
}
