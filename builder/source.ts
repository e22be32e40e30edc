import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import git from 'isomorphic-git';
import { UsageError } from '../lib/errors.js';

// What the build reads from the machine's repository: a commit straight from the
// object store (no checkout), or a working directory for local work. Both look the same.

export interface SourceFile {
  /** Path relative to the repository root, '/'-separated. */
  path: string;
  kind: 'file' | 'executable' | 'symlink';
  read(): Promise<Buffer>;
}

export interface Source {
  /** Human name for messages: "commit abc123" or "directory /x". */
  label: string;
  commit?: string;
  /** Seconds since the epoch: commit time, or newest mtime of a directory. */
  time: number;
  /** Identifies the content: git tree id, or a hash of the directory's files. */
  treeHash: string;
  readFile(path: string): Promise<Buffer | undefined>;
  /** Every file below dir (recursively), sorted by path. */
  list(dir: string): Promise<SourceFile[]>;
}

export async function gitSource(repoDir: string, rev = 'HEAD'): Promise<Source> {
  const gitdir = await findGitdir(repoDir);
  let oid: string;
  try {
    oid = await git.resolveRef({ fs, gitdir, ref: rev });
  } catch {
    try {
      oid = (await git.expandOid({ fs, gitdir, oid: rev }));
    } catch {
      throw new UsageError(`failed to resolve revision "${rev}" in ${repoDir}: no such branch, tag or commit`, { step: 'read source', input: rev });
    }
  }
  const { commit } = await git.readCommit({ fs, gitdir, oid }).catch((err: unknown) => {
    throw new UsageError(`failed to read commit ${oid} in ${repoDir}: ${String(err)}`, { step: 'read source', input: rev });
  });
  const blobAt = async (path: string): Promise<Buffer | undefined> => {
    try {
      const { blob } = await git.readBlob({ fs, gitdir, oid, filepath: path });
      return Buffer.from(blob);
    } catch {
      return undefined;
    }
  };
  return {
    label: `commit ${oid.slice(0, 12)}`,
    commit: oid,
    time: commit.committer.timestamp,
    treeHash: commit.tree,
    readFile: blobAt,
    list: async (dir) => listTree(gitdir, commit.tree, dir),
  };
}

async function findGitdir(repoDir: string): Promise<string> {
  if (fs.existsSync(join(repoDir, '.git'))) return join(repoDir, '.git');
  if (fs.existsSync(join(repoDir, 'HEAD')) && fs.existsSync(join(repoDir, 'objects'))) return repoDir;
  throw new UsageError(`failed to open repository ${repoDir}: not a git repository (no .git, not bare)`, { step: 'read source', input: repoDir });
}

async function listTree(gitdir: string, treeOid: string, dir: string): Promise<SourceFile[]> {
  let start = treeOid;
  for (const part of dir.split('/').filter(Boolean)) {
    const { tree } = await git.readTree({ fs, gitdir, oid: start });
    const entry = tree.find((e) => e.path === part && e.type === 'tree');
    if (!entry) return [];
    start = entry.oid;
  }
  const out: SourceFile[] = [];
  const walk = async (oid: string, prefix: string): Promise<void> => {
    const { tree } = await git.readTree({ fs, gitdir, oid });
    for (const e of tree) {
      const path = prefix ? `${prefix}/${e.path}` : e.path;
      if (e.type === 'tree') await walk(e.oid, path);
      else if (e.type === 'blob') {
        const kind = e.mode === '120000' ? 'symlink' : e.mode === '100755' ? 'executable' : 'file';
        out.push({ path, kind, read: async () => Buffer.from((await git.readBlob({ fs, gitdir, oid: e.oid })).blob) });
      }
    }
  };
  await walk(start, dir.replace(/\/+$/, ''));
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

export async function dirSource(dir: string): Promise<Source> {
  if (!fs.existsSync(dir)) throw new UsageError(`failed to open ${dir}: no such directory`, { step: 'read source', input: dir });
  const all = walkDir(dir, '');
  const hash = createHash('sha256');
  let newest = 0;
  for (const f of all) {
    const st = fs.lstatSync(join(dir, f.path));
    newest = Math.max(newest, Math.floor(st.mtimeMs / 1000));
    hash.update(`${f.path}\0${f.kind}\0`).update(await f.read());
  }
  return {
    label: `directory ${dir}`,
    time: newest,
    treeHash: hash.digest('hex'),
    readFile: async (path) => {
      const p = join(dir, path);
      return fs.existsSync(p) && fs.lstatSync(p).isFile() ? fs.readFileSync(p) : undefined;
    },
    list: async (sub) => all.filter((f) => f.path.startsWith(`${sub.replace(/\/+$/, '')}/`)),
  };

  function walkDir(root: string, rel: string): SourceFile[] {
    const out: SourceFile[] = [];
    for (const name of fs.readdirSync(join(root, rel)).sort()) {
      if (rel === '' && (name === '.git' || name === '.ramboot')) continue;
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(root, path);
      const st = fs.lstatSync(abs);
      if (st.isDirectory()) out.push(...walkDir(root, path));
      else if (st.isSymbolicLink()) out.push({ path, kind: 'symlink', read: async () => Buffer.from(fs.readlinkSync(abs)) });
      else if (st.isFile()) {
        out.push({ path, kind: st.mode & 0o111 ? 'executable' : 'file', read: async () => fs.readFileSync(abs) });
      }
    }
    return out;
  }
}
