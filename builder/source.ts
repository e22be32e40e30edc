import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import git from 'isomorphic-git';
import { CONFIG_FILE, MACHINES_DIR, parseConfigLayers, type ConfigLayer } from '../lib/config.js';
import type { Config } from '../lib/config-schema.js';
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
  /** The machine this source shows, in a repository of several (machineSource), and its own ramboot.yaml. */
  machine?: { name: string; config: string };
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
    list: async (sub) => (sub.replace(/\/+$/, '') ? all.filter((f) => f.path.startsWith(`${sub.replace(/\/+$/, '')}/`)) : all),
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

/** A machine's name: a directory name, and a label in metrics and messages. */
const MACHINE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** The machines a repository describes, by name, sorted; none for a one-machine repository. */
export async function listMachines(source: Source): Promise<string[]> {
  const names = new Set<string>();
  for (const f of await source.list(MACHINES_DIR)) {
    const [name, file] = f.path.slice(MACHINES_DIR.length + 1).split('/');
    if (file === CONFIG_FILE && f.path === `${MACHINES_DIR}/${name}/${CONFIG_FILE}`) names.add(name!);
  }
  return [...names].sort();
}

/**
 * One machine of a repository of several, seen as a one-machine repository: its
 * directory machines/NAME/ mirrors the top level. A file there replaces the top level's
 * (root/, secrets/, bins/, setup.sh, tpm/), its `packages` adds to the top level's, and
 * its ramboot.yaml is laid over the top level's (parseSourceConfig). Its treeHash covers
 * only what it sees, so a change to another machine's files leaves its builds alone.
 */
export async function machineSource(source: Source, name: string): Promise<Source> {
  const machines = await listMachines(source);
  if (!MACHINE_NAME.test(name) || !machines.includes(name)) {
    throw new UsageError(
      `failed to read machine "${name}" from ${source.label}: ${machines.length ? `its machines are ${machines.join(', ')}` : 'it describes one machine (no machines/NAME/ramboot.yaml)'}`,
      { step: 'read source', input: name },
    );
  }
  const own = `${MACHINES_DIR}/${name}`;
  const shared = (path: string) => path !== MACHINES_DIR && !path.startsWith(`${MACHINES_DIR}/`);
  const readFile = async (path: string): Promise<Buffer | undefined> => {
    if (!shared(path)) return undefined;
    const top = await source.readFile(path);
    const mine = await source.readFile(`${own}/${path}`);
    if (path === 'packages' && top && mine) return Buffer.concat([top, Buffer.from(top.length && top[top.length - 1] !== 0x0a ? '\n' : ''), mine]);
    // ramboot.yaml is the top level's here; parseSourceConfig lays the machine's over it.
    if (path === CONFIG_FILE) return top;
    return mine ?? top;
  };
  const list = async (dir: string): Promise<SourceFile[]> => {
    const d = dir.replace(/\/+$/, '');
    const byPath = new Map<string, SourceFile>();
    for (const f of await source.list(d)) if (shared(f.path)) byPath.set(f.path, f);
    for (const f of await source.list(d ? `${own}/${d}` : own)) {
      const path = f.path.slice(own.length + 1);
      if (path !== CONFIG_FILE && path !== 'packages') byPath.set(path, { ...f, path });
    }
    return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  };
  const hash = createHash('sha256').update(`machine ${name}\0`);
  for (const f of await list('')) hash.update(`${f.path}\0${f.kind}\0`).update(await f.read());
  for (const p of [CONFIG_FILE, 'packages']) hash.update(`${own}/${p}\0`).update((await source.readFile(`${own}/${p}`)) ?? '');
  const config = ((await source.readFile(`${own}/${CONFIG_FILE}`)) ?? Buffer.alloc(0)).toString();
  return { label: `${source.label}, machine ${name}`, commit: source.commit, time: source.time, treeHash: hash.digest('hex'), readFile, list, machine: { name, config } };
}

/** The source to build: the named machine's view, or the repository itself when it describes one machine. */
export async function selectMachine(source: Source, name: string | undefined): Promise<Source> {
  if (name !== undefined) return machineSource(source, name);
  const machines = await listMachines(source);
  if (machines.length > 0) {
    throw new UsageError(`${source.label} describes several machines (${machines.join(', ')}): name one with --machine`, { step: 'read source', input: MACHINES_DIR });
  }
  return source;
}

/** The source's ramboot.yaml, a machine's laid over the repository's. */
export async function parseSourceConfig(source: Source): Promise<Config> {
  const top = await source.readFile(CONFIG_FILE);
  if (!top) {
    throw new UsageError(`failed to read ${CONFIG_FILE} from ${source.label}: no such file (is this a machine repository? \`ramboot init\` makes one)`, {
      step: 'read config',
      input: CONFIG_FILE,
    });
  }
  if (!source.machine) await selectMachine(source, undefined);
  const layers: ConfigLayer[] = [{ text: top.toString(), file: CONFIG_FILE }];
  if (source.machine) layers.push({ text: source.machine.config, file: `${MACHINES_DIR}/${source.machine.name}/${CONFIG_FILE}` });
  return parseConfigLayers(layers);
}
