import fs from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import git from 'isomorphic-git';

// Finds plaintext private keys where they must never be: the skeleton (root/) and the
// committed tree. Matching is on the markers PEM, OpenSSH and age keys start with.

export interface KeyFinding {
  /** "root/etc/x" in the working directory, or "HEAD:path/in/tree". */
  where: string;
  /** The marker found, e.g. "-----BEGIN OPENSSH PRIVATE KEY-----". */
  marker: string;
}

// A marker counts only with key material after it, so documentation that merely
// mentions "-----BEGIN PRIVATE KEY-----" or "AGE-SECRET-KEY-1…" is not reported.
// Group 1 is what the report shows: never the key itself.
const MARKERS = [
  /(-----BEGIN (?!ENCRYPTED )(?:[A-Z0-9]+ )*PRIVATE KEY-----)\r?\n[A-Za-z0-9+/=]{16}/,
  /(AGE-SECRET-KEY-(?:PQ-)?1)[0-9A-Z]{58}/,
];

/** The marker a plaintext private key in `data` starts with, if there is one (never the key itself). */
export function privateKeyMarker(data: Uint8Array): string | undefined {
  const text = Buffer.from(data).toString('latin1');
  for (const re of MARKERS) {
    const m = re.exec(text);
    if (m) return m[1];
  }
  return undefined;
}

/** Regular files under dir (symlinks are not followed), named relative to repoDir. */
export async function scanDirectory(repoDir: string, dir: string): Promise<KeyFinding[]> {
  const findings: KeyFinding[] = [];
  async function walk(rel: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(join(repoDir, rel), { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const path = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(path);
      else if (e.isFile()) {
        const marker = privateKeyMarker(await readFile(join(repoDir, path)));
        if (marker) findings.push({ where: path, marker });
      }
    }
  }
  await walk(dir);
  return findings.sort((a, b) => (a.where < b.where ? -1 : 1));
}

/** Every blob of the HEAD commit's tree; nothing when repoDir is not a git repository or has no commit. */
export async function scanHeadTree(repoDir: string): Promise<KeyFinding[]> {
  const gitdir = await findGitDir(repoDir);
  if (!gitdir) return [];
  try {
    await git.resolveRef({ fs, gitdir, ref: 'HEAD' });
  } catch {
    return [];
  }
  const findings: KeyFinding[] = [];
  await git.walk({
    fs,
    gitdir,
    trees: [git.TREE({ ref: 'HEAD' })],
    map: async (path, [entry]) => {
      if (!entry || (await entry.type()) !== 'blob') return true;
      const content = await entry.content();
      const marker = content && privateKeyMarker(content);
      if (marker) findings.push({ where: `HEAD:${path}`, marker });
      return true;
    },
  });
  // walk's callbacks run concurrently: sort for a stable report.
  return findings.sort((a, b) => (a.where < b.where ? -1 : 1));
}

/** repoDir/.git, or the directory a worktree's .git file points to. */
async function findGitDir(repoDir: string): Promise<string | undefined> {
  const dotGit = join(repoDir, '.git');
  try {
    if ((await stat(dotGit)).isDirectory()) return dotGit;
    const m = /^gitdir: (.+)$/m.exec(await readFile(dotGit, 'utf8'));
    return m ? resolve(repoDir, m[1]!.trim()) : undefined;
  } catch {
    return undefined;
  }
}
