import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import git from 'isomorphic-git';
import { UsageError } from '../lib/errors.js';
import { privateKeyMarker } from '../secrets/scan.js';

// Plaintext private keys anywhere in the history being built: every blob of every commit
// after the base (all of the history when there is none), each read once. A key that was
// committed and removed again is still in every clone, so removing the file is not enough.

export interface HistoryFinding {
  /** "<commit>:<path>", the newest commit that holds the blob. */
  where: string;
  marker: string;
}

/** The git directory of a working tree (.git, or the directory a .git file names) or of a bare repository. */
export function gitDirOf(repoDir: string): string {
  const dotGit = join(repoDir, '.git');
  if (fs.existsSync(dotGit)) {
    if (fs.statSync(dotGit).isDirectory()) return dotGit;
    const m = /^gitdir: (.+)$/m.exec(fs.readFileSync(dotGit, 'utf8'));
    if (m) return resolve(repoDir, m[1]!.trim());
  }
  if (fs.existsSync(join(repoDir, 'HEAD')) && fs.existsSync(join(repoDir, 'objects'))) return repoDir;
  throw new UsageError(`failed to open repository ${repoDir}: not a git repository (no .git, not bare)`, { step: 'read history', input: repoDir });
}

/** Parents of a commit that the repository has (a shallow clone lacks the older ones). */
async function parents(gitdir: string, oid: string): Promise<string[]> {
  try {
    return (await git.readCommit({ fs, gitdir, oid })).commit.parent;
  } catch {
    return [];
  }
}

/** Every commit reachable from `from`, newest first by discovery. */
async function reachable(gitdir: string, from: string, stop: Set<string> = new Set()): Promise<string[]> {
  const seen = new Set<string>();
  const queue = [from];
  const out: string[] = [];
  while (queue.length > 0) {
    const oid = queue.shift()!;
    if (seen.has(oid) || stop.has(oid)) continue;
    seen.add(oid);
    out.push(oid);
    queue.push(...(await parents(gitdir, oid)));
  }
  return out;
}

/** The commits after `base` up to `head` (all of head's history without a base). */
export async function commitsBetween(gitdir: string, head: string, base?: string): Promise<string[]> {
  const stop = base ? new Set(await reachable(gitdir, base)) : new Set<string>();
  return reachable(gitdir, head, stop);
}

/** Blobs of these commits that hold a plaintext private key; each tree and blob is read once. */
export async function scanCommits(gitdir: string, commits: string[]): Promise<HistoryFinding[]> {
  const trees = new Set<string>();
  const blobs = new Set<string>();
  const findings: HistoryFinding[] = [];
  const walk = async (commit: string, tree: string, prefix: string): Promise<void> => {
    if (trees.has(tree)) return;
    trees.add(tree);
    for (const e of (await git.readTree({ fs, gitdir, oid: tree })).tree) {
      const path = prefix ? `${prefix}/${e.path}` : e.path;
      if (e.type === 'tree') await walk(commit, e.oid, path);
      else if (e.type === 'blob' && !blobs.has(e.oid)) {
        blobs.add(e.oid);
        const marker = privateKeyMarker((await git.readBlob({ fs, gitdir, oid: e.oid })).blob);
        if (marker) findings.push({ where: `${commit.slice(0, 12)}:${path}`, marker });
      }
    }
  };
  for (const c of commits) await walk(c, (await git.readCommit({ fs, gitdir, oid: c })).commit.tree, '');
  return findings;
}
