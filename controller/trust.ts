import * as fs from 'node:fs';
import git from 'isomorphic-git';
import { gitSource } from '../builder/source.js';
import type { Config } from '../lib/config-schema.js';
import { UsageError } from '../lib/errors.js';
import { configOf } from './open-machine.js';
import type { Repo } from './repo.js';
import { verifyCommit } from './signing.js';

// What the controller may believe of a commit before it has verified it: nothing. Its
// state directory and signing policy come from how it was started; the configuration it
// starts with comes from the commit the machine runs (which passed the policy when it was
// deployed) or, on the first start, from a head that passes the policy in force.

export interface StartingPoint {
  commit: string;
  config: Config;
  /** The policy in force: the one given, or on a first start the start commit's watch.signers. */
  signers?: string;
}

/** True when oid is ancestor or descends from it; a history that cannot be read is no proof. */
export async function descends(gitdir: string, oid: string, ancestor: string): Promise<boolean> {
  if (oid === ancestor) return true;
  try {
    return await git.isDescendent({ fs, gitdir, oid, ancestor, depth: -1 });
  } catch {
    return false;
  }
}

/**
 * The commit whose configuration the controller starts with. The running commit's, when
 * there is one; else the branch head's, verified first when a policy is in force (the
 * head's own watch.signers counts: it can only make the start stricter). A head with a
 * broken ramboot.yaml falls back to the newest valid commit before it, verified likewise
 * (a signed head vouches for its parents). Fails, needing a person, when no commit can be
 * trusted: nothing is built from an unverified commit, not even the virtual NAS's first image.
 */
export async function startingPoint(repo: Repo, head: string, o: { signers?: string; running?: string }): Promise<StartingPoint> {
  if (o.running) {
    const config = await configOf(await gitSource(repo.gitdir, o.running)).catch(() => undefined);
    if (config) return { commit: o.running, config, signers: o.signers };
  }
  let oid = head;
  let firstError: unknown;
  for (let depth = 0; depth < 100; depth++) {
    let config: Config | undefined;
    try {
      config = await configOf(await gitSource(repo.gitdir, oid));
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      firstError ??= err;
    }
    const signers = o.signers ?? config?.watch.signers;
    if (signers) await mustVerify(repo, oid, signers);
    if (config) return { commit: oid, config, signers };
    const parent = (await git.readCommit({ fs, gitdir: repo.gitdir, oid })).commit.parent[0];
    if (!parent) break;
    oid = parent;
  }
  throw firstError;
}

async function mustVerify(repo: Repo, oid: string, signers: string): Promise<void> {
  const info = await repo.info(oid);
  const check = await verifyCommit(await repo.rawCommit(oid), info.committerEmail, signers);
  if (check.ok) return;
  throw new UsageError(
    `failed to start: commit ${oid.slice(0, 12)} of branch ${repo.branch} does not pass the signing policy (${check.reason}), and no deployed commit is known to start from; ` +
      `push a commit signed by a key of ${signers}, or start with another --branch`,
    { step: 'verify signature', input: oid },
  );
}

export interface TrustChange {
  /** What to record in controller.json. */
  update: { signers?: string; branch?: string };
  /** What to tell the person (a kept policy, a branch that changes at the next start). */
  notes: string[];
}

/**
 * What a promoted commit changes in the trust settings: it passed the policy in force, so
 * its watch.signers becomes the policy (unless --signers fixed it) and its watch.branch the
 * branch of the next start (unless --branch did). A commit never turns signing off.
 */
export function trustAfterPromotion(
  commit: string,
  config: Pick<Config, 'watch'>,
  now: { signers?: string; branch?: string; followed: string; signersGiven: boolean; branchGiven: boolean },
): TrustChange {
  const change: TrustChange = { update: {}, notes: [] };
  const short = commit.slice(0, 12);
  if (!now.branchGiven && config.watch.branch !== now.followed && config.watch.branch !== now.branch) {
    change.update.branch = config.watch.branch;
    change.notes.push(`watch.branch is ${config.watch.branch} from ${short} on: followed from the next start`);
  }
  if (now.signersGiven) return change;
  if (config.watch.signers && config.watch.signers !== now.signers) change.update.signers = config.watch.signers;
  else if (!config.watch.signers && now.signers) {
    change.notes.push(
      `ramboot.yaml of ${short} names no watch.signers: signing stays required (${now.signers}); only a person turns it off, with \`ramboot up --signers none\` on the controller host`,
    );
  }
  return change;
}
