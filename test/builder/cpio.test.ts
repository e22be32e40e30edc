import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync, chmodSync, chownSync, createWriteStream, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync,
  readdirSync, readlinkSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeCpio, type CpioEntry } from '../../builder/cpio.js';
import { packTree, writeSegment } from '../../builder/segment.js';
import { compareUtf8, walkTree } from '../../builder/tree.js';
import { BuildError, CommandError } from '../../lib/errors.js';
import { segmentArchives, unpackSegment } from '../helpers/segment.js';

const sh = (cmd: string, cwd?: string): string => execFileSync('sh', ['-c', cmd], { cwd, encoding: 'utf8' });

let work: string;
let src: string;

const LONG_NAME = `${'n'.repeat(150)}.txt`;
const DEEP_DIR = Array.from({ length: 5 }, (_, i) => `${i}${'d'.repeat(59)}`).join('/');
const T = 1_700_000_000;

/** Every kind of entry the writer handles, as tests run as root (devices, owners). */
function makeTree(root: string): void {
  const file = (p: string, content: string | Buffer, mode = 0o644): void => {
    writeFileSync(join(root, p), content);
    chmodSync(join(root, p), mode);
  };
  for (const d of ['a/b/c', 'empty', 'sticky', 'h', 'dev', 'ünïcødé', DEEP_DIR]) mkdirSync(join(root, d), { recursive: true });
  file('a/exec', '#!/bin/sh\necho hi\n', 0o755);
  file('a/secret', 'private\n', 0o600);
  file('a/suid', 'setuid program\n', 0o4755);
  file('sticky/inside', 'x');
  chmodSync(join(root, 'sticky'), 0o1777);
  file('a/owned', 'owned by someone else\n');
  chownSync(join(root, 'a/owned'), 1234, 5678);
  symlinkSync('exec', join(root, 'a/rel'));
  symlinkSync('/etc/passwd', join(root, 'abs'));
  symlinkSync('nowhere/missing', join(root, 'dangling'));
  file('h/one', 'shared by three names\n');
  linkSync(join(root, 'h/one'), join(root, 'h/two'));
  linkSync(join(root, 'h/one'), join(root, 'a/b/three'));
  sh('mknod dev/null c 1 3 && mknod dev/loop0 b 7 0 && mkfifo fifo', root);
  // A unix socket: node exits without closing the server, so the socket file stays.
  sh(`node -e "require('net').createServer().listen('sock', () => process.exit(0))"`, root);
  file(LONG_NAME, 'long name\n');
  file(`${DEEP_DIR}/leaf`, 'deep\n');
  file('empty-file', '');
  file('big', randomBytes(5 * 1024 * 1024));
  file('ünïcødé/日本語 😀.txt', 'unicode\n');
  for (const e of walkTree(root)) {
    if (e.type !== 'symlink') utimesSync(join(root, e.path), T, T);
  }
}

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  sha?: string;
  target?: string;
  rdev?: number;
}

/** An independent description of a tree (not via walkTree), for comparing extractions. */
function snapshot(root: string): { nodes: Record<string, Node>; links: string[][] } {
  const nodes: Record<string, Node> = {};
  const inodes = new Map<string, string[]>();
  const visit = (rel: string): void => {
    for (const name of readdirSync(join(root, rel))) {
      const p = rel ? `${rel}/${name}` : name;
      const abs = join(root, p);
      const st = lstatSync(abs);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink'
        : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket';
      const node: Node = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
      if (type === 'file') node.sha = createHash('sha256').update(readFileSync(abs)).digest('hex');
      if (type === 'symlink') node.target = readlinkSync(abs);
      if (type === 'char' || type === 'block') node.rdev = st.rdev;
      if (type !== 'dir' && type !== 'symlink') node.mtime = Math.floor(st.mtimeMs / 1000);
      nodes[p] = node;
      if (type !== 'dir' && st.nlink > 1) inodes.set(`${st.ino}`, [...(inodes.get(`${st.ino}`) ?? []), p]);
      if (type === 'dir') visit(p);
    }
  };
  visit('');
  const links = [...inodes.values()].map((g) => g.sort()).sort((x, y) => x[0]!.localeCompare(y[0]!));
  return { nodes, links };
}

function collect(): { stream: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk);
      done();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

async function archive(entries: Iterable<CpioEntry>): Promise<Buffer> {
  const sink = collect();
  await writeCpio(entries, sink.stream);
  return sink.bytes();
}

interface Header {
  name: string;
  ino: number;
  mode: number;
  nlink: number;
  size: number;
}

/** Reads back the headers of a newc archive, to check what the writer put in them. */
function headers(buf: Buffer): Header[] {
  const out: Header[] = [];
  let o = 0;
  for (;;) {
    expect(buf.toString('latin1', o, o + 6)).toBe('070701');
    const field = (i: number): number => parseInt(buf.toString('latin1', o + 6 + 8 * i, o + 14 + 8 * i), 16);
    const namesize = field(11);
    const name = buf.toString('utf8', o + 110, o + 110 + namesize - 1);
    const size = field(6);
    out.push({ name, ino: field(0), mode: field(1), nlink: field(4), size });
    if (name === 'TRAILER!!!') return out;
    o = align4(align4(o + 110 + namesize) + size);
  }
}

const align4 = (n: number): number => (n + 3) & ~3;

function extract(archiveCmd: string): string {
  const dest = mkdtempSync(join(work, 'out-'));
  sh(`${archiveCmd} | cpio -idmu --no-absolute-filenames --quiet`, dest);
  return dest;
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ramboot-cpio-'));
  src = join(work, 'src');
  mkdirSync(src);
  makeTree(src);
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('walkTree', () => {
  it('lists every entry except the root, sorted bytewise with parents first', () => {
    const entries = walkTree(src);
    const paths = entries.map((e) => e.path);
    expect(new Set(paths)).toEqual(new Set(Object.keys(snapshot(src).nodes)));
    const bytewise = [...paths].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(paths).toEqual(bytewise);
    const kinds = new Set(entries.map((e) => e.type));
    expect(kinds).toEqual(new Set(['file', 'dir', 'symlink', 'char', 'block', 'fifo', 'socket']));
  });

  it('groups the names of one inode and counts only links inside the tree', () => {
    const group = walkTree(src).filter((e) => e.linkId !== undefined);
    expect(group.map((e) => e.path)).toEqual(['a/b/three', 'h/one', 'h/two']);
    expect(new Set(group.map((e) => e.linkId)).size).toBe(1);
    expect(group.every((e) => e.nlink === 3)).toBe(true);
    const outside = walkTree(src, { exclude: (p) => p === 'h' });
    expect(outside.find((e) => e.path === 'a/b/three')).toMatchObject({ type: 'file' });
    expect(outside.find((e) => e.path === 'a/b/three')?.linkId).toBeUndefined();
  });

  it('applies exclude to whole subtrees and lets the caller set mtimes and owners', () => {
    const entries = walkTree(src, {
      exclude: (p) => p === 'a' || p.endsWith('.txt'),
      mtime: (_p, actual) => Math.min(actual, 1000),
      owner: (p) => (p === 'big' ? { uid: 7, gid: 8 } : { uid: 0, gid: 0 }),
    });
    expect(entries.some((e) => e.path === 'a' || e.path.startsWith('a/') || e.path.endsWith('.txt'))).toBe(false);
    expect(entries.every((e) => e.mtime === 1000)).toBe(true);
    expect(entries.find((e) => e.path === 'big')).toMatchObject({ uid: 7, gid: 8 });
    expect(entries.find((e) => e.path === 'dev/null')).toMatchObject({ uid: 0, rdevMajor: 1, rdevMinor: 3 });
  });

  it('refuses a name that is not UTF-8 instead of mangling it', () => {
    const dir = mkdtempSync(join(work, 'latin1-'));
    writeFileSync(Buffer.concat([Buffer.from(`${dir}/caf`), Buffer.from([0xe9])]), 'x');
    expect(() => walkTree(dir)).toThrow(/failed to walk .*latin1-.*: the name "café" is not valid UTF-8/);
  });

  it('counts a directory link as 2 plus its subdirectories', () => {
    const a = walkTree(src).find((e) => e.path === 'a');
    expect(a?.nlink).toBe(3);
  });

  it('orders strings as their UTF-8 bytes do, also beyond the BMP', () => {
    const names = ['\u{1F600}', '\uFFFD', 'z', '\uE000', 'é', 'a/b', 'a-b', 'a'];
    const bytewise = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...names].sort(compareUtf8)).toEqual(bytewise);
  });
});

describe('writeCpio', () => {
  it('produces an archive GNU cpio lists with exactly the tree’s paths', async () => {
    const file = join(work, 'tree.cpio');
    await writeCpio(walkTree(src), createWriteStream(file));
    const listed = sh(`cpio -it --quiet < ${file}`).split('\n').filter(Boolean);
    expect(new Set(listed)).toEqual(new Set(Object.keys(snapshot(src).nodes)));
  });

  it('extracts with GNU cpio to a tree equal to the source', async () => {
    const file = join(work, 'extract.cpio');
    await writeCpio(walkTree(src), createWriteStream(file));
    const dest = extract(`cat ${file}`);
    expect(snapshot(dest)).toEqual(snapshot(src));
  });

  it('gives each inode a unique number from its path and stores a hardlink group’s data once, with its first entry', async () => {
    const hs = headers(await archive(walkTree(src)));
    const entries = hs.slice(0, -1);
    const group = entries.filter((h) => ['a/b/three', 'h/one', 'h/two'].includes(h.name));
    expect(group.map((h) => h.size)).toEqual([22, 0, 0]);
    expect(new Set(group.map((h) => h.ino)).size).toBe(1);
    expect(group.every((h) => h.nlink === 3)).toBe(true);
    const inodes = entries.filter((h) => !['h/one', 'h/two'].includes(h.name)).map((h) => h.ino);
    expect(new Set(inodes).size).toBe(inodes.length);
    expect(inodes).not.toContain(0);
    expect(hs.at(-1)).toMatchObject({ name: 'TRAILER!!!', ino: 0, size: 0 });
  });

  it('an added entry leaves every other header as it was (a delta sends only what changed)', async () => {
    const entries = walkTree(src);
    const before = headers(await archive(entries));
    const added = { path: 'a/added', type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtime: 0, data: Buffer.from('new\n') };
    const after = headers(await archive([...entries, added].sort((x, y) => compareUtf8(x.path, y.path))));
    expect(after.filter((h) => h.name !== 'a/added')).toEqual(before);
  });

  it('gives identical bytes for two packs of the same tree', async () => {
    const [x, y] = [await archive(walkTree(src)), await archive(walkTree(src))];
    expect(x.equals(y)).toBe(true);
  });

  it('writes in-memory data without a source file', async () => {
    const secret = Buffer.from('-----BEGIN KEY-----\nabc\n');
    const meta = { uid: 0, gid: 0, mtime: T };
    const bytes = await archive([
      { path: 'etc', type: 'dir', mode: 0o755, ...meta },
      { path: 'etc/key', type: 'file', mode: 0o600, data: secret, ...meta },
    ]);
    const file = join(work, 'mem.cpio');
    writeFileSync(file, bytes);
    const dest = extract(`cat ${file}`);
    expect(readFileSync(join(dest, 'etc/key'))).toEqual(secret);
    expect(statSync(join(dest, 'etc/key')).mode & 0o7777).toBe(0o600);
  });

  it.each([
    ['an mtime beyond 32 bits', { mtime: 2 ** 32 }, /mtime 4294967296/],
    ['a negative mtime', { mtime: -1 }, /mtime -1/],
    ['a uid beyond 32 bits', { uid: 2 ** 32 }, /uid 4294967296/],
    ['a gid beyond 32 bits', { gid: 2 ** 32 + 5 }, /gid 4294967301/],
    ['mode bits beyond 0o7777', { mode: 0o100644 }, /mode/],
    ['a size of 4 GiB', { size: 2 ** 32 }, /4294967296 bytes.*4 GiB/],
    ['a name longer than the kernel accepts', { path: `x/${'y'.repeat(4100)}` }, /name is 4102 bytes; the kernel accepts at most 4095/],
    ['a path with ..', { path: 'a/../../etc/passwd' }, /'\.\.'/],
    ['an absolute path', { path: '/etc/passwd' }, /relative/],
  ])('refuses %s with a BuildError naming the path', async (_what, override, message) => {
    const entry = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, data: Buffer.alloc(0), ...override } as CpioEntry;
    if ('size' in override) entry.data = undefined;
    if ('size' in override) entry.source = '/dev/null';
    const err = await archive([entry]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildError);
    expect((err as Error).message).toContain(entry.path);
    expect((err as Error).message).toMatch(message);
  });

  it('refuses a hardlink group whose nlink does not match its entries', async () => {
    const e = (path: string): CpioEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, data: Buffer.from('x'), linkId: 'i', nlink: 3 });
    await expect(archive([e('a'), e('b')])).rejects.toThrow(/a: .*nlink=3 but 2 entries share linkId i/);
  });

  it('refuses a source file that changed size after the walk', async () => {
    const dir = mkdtempSync(join(work, 'grow-'));
    writeFileSync(join(dir, 'log'), 'first line\n');
    const entries = walkTree(dir);
    appendFileSync(join(dir, 'log'), 'second line\n');
    await expect(archive(entries)).rejects.toThrow(/failed to archive log: .*changed while packing: its size is now 23 bytes, the header says 11/);
  });

  it('refuses a source that is no longer a regular file', async () => {
    const dir = mkdtempSync(join(work, 'swap-'));
    writeFileSync(join(dir, 'f'), 'x');
    const entries = walkTree(dir);
    rmSync(join(dir, 'f'));
    sh('mkfifo f', dir);
    await expect(archive(entries)).rejects.toThrow(/failed to archive f: .*no longer a regular file/);
  });

  it('rejects when the destination fails instead of hanging', async () => {
    const failing = new Writable({
      write(_chunk, _enc, done) {
        done(new Error('disk full'));
      },
    });
    await expect(writeCpio(walkTree(src), failing, { chunkSize: 64 * 1024 })).rejects.toThrow(/disk full/);
  });
});

describe('writeSegment', () => {
  it('writes a zstd segment GNU cpio extracts to a tree equal to the source', async () => {
    const seg = join(work, 'tree.cpio.zst');
    const r = await packTree(src, seg);
    expect(r.bytes).toBe(statSync(seg).size);
    expect(r.sha256).toBe(createHash('sha256').update(readFileSync(seg)).digest('hex'));
    const dest = mkdtempSync(join(work, 'out-'));
    unpackSegment(seg, dest);
    expect(snapshot(dest)).toEqual(snapshot(src));
  });

  it('cuts a segment into archives that each end in a TRAILER!!!, the hardlinked entries together in the last', async () => {
    const big = mkdtempSync(join(work, 'big-'));
    for (let i = 0; i < 64; i++) writeFileSync(join(big, `f${i}`), randomBytes(16 * 1024));
    writeFileSync(join(big, 'l1'), 'linked\n');
    linkSync(join(big, 'l1'), join(big, 'l2'));
    const seg = join(work, 'pieces.cpio.zst');
    await packTree(big, seg);
    const archives = segmentArchives(seg);
    expect(archives.length).toBeGreaterThan(2);
    for (const a of archives) expect(headers(a).at(-1)!.name).toBe('TRAILER!!!');
    expect(headers(archives.at(-1)!).slice(0, -1).map((h) => h.name)).toEqual(['l1', 'l2']);
  });

  it('gives byte-identical segments for repeated packs', async () => {
    const a = await packTree(src, join(work, 'rep-a.cpio.zst'));
    const b = await packTree(src, join(work, 'rep-b.cpio.zst'));
    expect(a.sha256).toBe(b.sha256);
    expect(readFileSync(a.file).equals(readFileSync(b.file))).toBe(true);
  });

  it('creates the file with the requested mode and refuses to overwrite one', async () => {
    const meta = { uid: 0, gid: 0, mtime: 0 };
    const secrets = join(work, 'secrets.cpio.zst');
    await writeSegment([{ path: 'k', type: 'file', mode: 0o600, data: Buffer.from('s'), ...meta }], secrets, { mode: 0o600 });
    expect(statSync(secrets).mode & 0o777).toBe(0o600);
    const plain = await writeSegment([{ path: 'd', type: 'dir', mode: 0o755, ...meta }], join(work, 'plain.cpio.zst'));
    expect(statSync(plain.file).mode & 0o777).toBe(0o644);
    await expect(writeSegment([], secrets)).rejects.toThrow(/failed to create .*secrets\.cpio\.zst: .*EEXIST/);
  });

  it('surfaces a failing zstd as a CommandError with its stderr, and leaves no output', async () => {
    const bin = mkdtempSync(join(work, 'bin-'));
    writeFileSync(join(bin, 'zstd'), '#!/bin/sh\necho "zstd: out of cheese" >&2\nexit 3\n', { mode: 0o755 });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const out = join(work, 'failed.cpio.zst');
      const err = await packTree(src, out).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommandError);
      expect((err as CommandError).exitCode).toBe(3);
      expect((err as Error).message).toMatch(/failed to compress .*failed\.cpio\.zst: `zstd -T1 -6 -q --no-progress -c PIECE\.\.\.` exited with 3\nzstd: out of cheese/);
      expect(() => statSync(out)).toThrow(/ENOENT/);
    } finally {
      process.env.PATH = path;
    }
  });

  it('reports a full disk as a BuildError and leaves no partial file', async () => {
    const small = mkdtempSync(join(work, 'full-'));
    sh(`mount -t tmpfs -o size=64k tmpfs ${small}`);
    try {
      const out = join(small, 'tree.cpio.zst');
      await expect(packTree(src, out)).rejects.toThrow(/failed to write .*tree\.cpio\.zst: ENOSPC/);
      expect(readdirSync(small)).toEqual([]);
    } finally {
      sh(`umount ${small}`);
    }
  });

  it('stops zstd and removes the output when an entry fails midway', async () => {
    const dir = mkdtempSync(join(work, 'midway-'));
    writeFileSync(join(dir, 'a'), randomBytes(1024 * 1024));
    writeFileSync(join(dir, 'b'), 'short');
    const entries = walkTree(dir);
    appendFileSync(join(dir, 'b'), ' and longer');
    const out = join(work, 'midway.cpio.zst');
    await expect(writeSegment(entries, out)).rejects.toThrow(/failed to archive b: .*changed while packing/);
    expect(() => statSync(out)).toThrow(/ENOENT/);
  });

  it('refuses a file of 4 GiB or more with a BuildError naming it, and leaves no output', async () => {
    const dir = mkdtempSync(join(work, 'huge-'));
    mkdirSync(join(dir, 'var'));
    writeFileSync(join(dir, 'var/disk.img'), '');
    truncateSync(join(dir, 'var/disk.img'), 5 * 2 ** 30);
    const out = join(work, 'huge.cpio.zst');
    const err = await packTree(dir, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildError);
    expect((err as Error).message).toMatch(/var\/disk\.img: the file is 5368709120 bytes; the newc format holds files up to 4294967295 bytes/);
    expect(() => statSync(out)).toThrow(/ENOENT/);
  });
});
