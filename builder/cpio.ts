import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { BuildError, describe } from '../lib/errors.js';

/** This module's part of the base segment's recipe (builder/recipe.ts). */
export const CPIO_SOURCE = import.meta.url;

// A streaming writer for the "newc" cpio format (magic 070701), the format the Linux
// kernel unpacks as an initramfs. Layout of each entry: a 110-byte ASCII header
// (13 fields of 8 hex digits), the NUL-terminated name padded to 4 bytes, then the
// body padded to 4 bytes. The archive ends with an entry named TRAILER!!!.

export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface CpioEntry {
  /** Relative, no leading '/', e.g. 'etc/passwd'. */
  path: string;
  type: EntryType;
  /** Permission bits including suid/sgid/sticky (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** For 'file': the expected size; checked against the source while reading. */
  size?: number;
  /** For 'file': absolute path of the file to stream the content from. */
  source?: string;
  /** For 'file': in-memory content (e.g. secrets, which never touch the disk). */
  data?: Buffer;
  /** For 'symlink': the target, stored as the body. */
  linkTarget?: string;
  /** For 'char' and 'block'. */
  rdevMajor?: number;
  rdevMinor?: number;
  /** Entries with the same linkId are one inode (hardlinks). */
  linkId?: string;
  /** Number of entries in the archive sharing linkId (required with linkId). */
  nlink?: number;
}

export interface CpioResult {
  entries: number;
  /** Size of the uncompressed archive. */
  bytes: number;
}

export interface CpioOptions {
  /** Size of the staging buffer; headers and file data are batched into writes this big. */
  chunkSize?: number;
  /**
   * Hands back a chunk the consumer has finished with, to be filled again: memory that
   * is already mapped saves the page faults and GC work of a fresh buffer per chunk.
   */
  reuse?: () => Buffer | undefined;
}

const TYPE_BITS: Record<EntryType, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  char: 0o020000,
  block: 0o060000,
  fifo: 0o010000,
  socket: 0o140000,
};

// The kernel only links regular files and special files (init/initramfs.c maybe_link).
const LINKABLE = new Set<EntryType>(['file', 'char', 'block', 'fifo', 'socket']);

const U32_MAX = 0xffff_ffff;
// The kernel skips names (with their NUL) and symlink bodies longer than PATH_MAX.
const PATH_MAX = 4096;
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const DEFAULT_CHUNK = 4 * 1024 * 1024;
// Bytes handed to the stream but not yet consumed before the writer waits for 'drain'.
const MAX_QUEUED = 8 * 1024 * 1024;
const HEX = Buffer.from('0123456789abcdef');
const DOTDOT = /(^|\/)\.\.(\/|$)/;
// A source swapped for a FIFO must not block the open (O_NONBLOCK), nor one swapped for
// a symlink lead elsewhere (O_NOFOLLOW); the size check then reports the change.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** The inode fields a header carries; hardlinked entries repeat the first entry's. */
interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  nlink: number;
  rdevMajor: number;
  rdevMinor: number;
}

interface LinkGroup {
  inode: Inode;
  type: EntryType;
  seen: number;
  firstPath: string;
}

/**
 * Writes `entries` as a newc archive to `out`, ends `out` and resolves once it has
 * flushed. An inode number is taken from its (first) path, not counted: a file added or
 * removed leaves every other header as it was, so the compressed archive changes only
 * near the change (what deploy/delta.ts sends). Numbers stay unique in the archive; a
 * hardlink group stores its data once, with its first entry (later entries have size 0),
 * which both the kernel and GNU cpio resolve through the shared inode number.
 */
export async function writeCpio(
  entries: Iterable<CpioEntry> | AsyncIterable<CpioEntry>,
  out: Writable,
  opts: CpioOptions = {},
): Promise<CpioResult> {
  const sink = new Sink(out, opts.chunkSize ?? DEFAULT_CHUNK, opts.reuse);
  const groups = new Map<string, LinkGroup>();
  const used = new Set<number>();
  let count = 0;
  try {
    for await (const entry of entries) {
      const name = checkEntry(entry);
      if (used.size >= MAX_INODES) throw limit(entry.path, 'the archive has more entries than 32-bit inode numbers allow');
      const ino = () => inodeOf(entry.path, used);
      const group = entry.linkId === undefined ? undefined : joinGroup(groups, entry, ino);
      const first = group === undefined || group.seen === 1;
      const inode = group?.inode ?? ownInode(entry, ino());
      await writeEntry(sink, entry, name, inode, first);
      count++;
    }
    checkGroupsComplete(groups);
    await sink.header({ ino: 0, mode: 0, uid: 0, gid: 0, mtime: 0, nlink: 1, rdevMajor: 0, rdevMinor: 0 }, 0, TRAILER, TRAILER.length, '');
    await sink.finish();
  } finally {
    sink.release();
  }
  return { entries: count, bytes: sink.total };
}

/** Validates what the format (and the kernel's unpacker) can hold; returns the name's byte length. */
function checkEntry(e: CpioEntry): number {
  const p = e.path;
  if (p === '' || p.startsWith('/') || p.includes('\0') || p === TRAILER) {
    throw invalid(p, 'the path must be relative, non-empty, without NUL and not the trailer name');
  }
  if (DOTDOT.test(p)) throw invalid(p, "the path must not contain '..'");
  const nameBytes = Buffer.byteLength(p);
  if (nameBytes + 1 > PATH_MAX) throw limit(p, `the name is ${nameBytes} bytes; the kernel accepts at most ${PATH_MAX - 1}`);
  if (!Object.hasOwn(TYPE_BITS, e.type)) throw invalid(p, `unknown entry type ${String(e.type)}`);
  if (!isUint(e.mode, 0o7777)) throw invalid(p, `mode ${String(e.mode)} is not permission bits (0 to 0o7777)`);
  checkU32(p, 'uid', e.uid);
  checkU32(p, 'gid', e.gid);
  checkU32(p, 'mtime', e.mtime);
  if (e.size !== undefined && !isUint(e.size, Number.MAX_SAFE_INTEGER)) throw invalid(p, `size ${e.size} is not a byte count`);
  checkSize(p, e.size ?? e.data?.length ?? 0);
  if (e.type === 'file') {
    if ((e.source === undefined) === (e.data === undefined)) throw invalid(p, 'a file needs exactly one of source and data');
    if (e.data !== undefined && e.size !== undefined && e.size !== e.data.length) {
      throw invalid(p, `size ${e.size} differs from the ${e.data.length} bytes of data`);
    }
  }
  if (e.type === 'symlink') {
    if (!e.linkTarget || e.linkTarget.includes('\0')) throw invalid(p, 'a symlink needs a non-empty target without NUL');
    const len = Buffer.byteLength(e.linkTarget);
    if (len + 1 > PATH_MAX) throw limit(p, `the symlink target is ${len} bytes; the kernel accepts at most ${PATH_MAX - 1}`);
  }
  if (e.type === 'char' || e.type === 'block') {
    if (e.rdevMajor === undefined || e.rdevMinor === undefined) throw invalid(p, `a ${e.type} device needs rdevMajor and rdevMinor`);
    checkU32(p, 'rdevMajor', e.rdevMajor);
    checkU32(p, 'rdevMinor', e.rdevMinor);
  }
  if (e.nlink !== undefined && !isUint(e.nlink, U32_MAX)) throw invalid(p, `nlink ${e.nlink} is not a link count`);
  if (e.linkId !== undefined) {
    if (!LINKABLE.has(e.type)) throw invalid(p, `a ${e.type} cannot be hardlinked`);
    if (e.nlink === undefined || e.nlink < 2) {
      throw invalid(p, 'a hardlinked entry needs nlink >= 2: the number of entries sharing its linkId');
    }
  }
  return nameBytes;
}

function ownInode(e: CpioEntry, ino: number): Inode {
  return {
    ino,
    mode: TYPE_BITS[e.type] | e.mode,
    uid: e.uid,
    gid: e.gid,
    mtime: e.mtime,
    // A directory's link count (2 + subdirectories) is for the caller to know; 2 is the least.
    nlink: e.nlink ?? (e.type === 'dir' ? 2 : 1),
    rdevMajor: e.rdevMajor ?? 0,
    rdevMinor: e.rdevMinor ?? 0,
  };
}

/** Numbers in use, the trailer's 0 aside: a 32-bit space. */
const MAX_INODES = U32_MAX;

/** The inode number of `path`: from its sha256, the next free one if another path has it. */
function inodeOf(path: string, used: Set<number>): number {
  let ino = createHash('sha256').update(path).digest().readUInt32BE(0) || 1;
  while (used.has(ino)) ino = ino === U32_MAX ? 1 : ino + 1;
  used.add(ino);
  return ino;
}

/** Registers an entry in its hardlink group; the first entry's inode fields stand for all. */
function joinGroup(groups: Map<string, LinkGroup>, e: CpioEntry, ino: () => number): LinkGroup {
  const id = e.linkId as string;
  const group = groups.get(id);
  if (group === undefined) {
    const created = { inode: ownInode(e, ino()), type: e.type, seen: 1, firstPath: e.path };
    groups.set(id, created);
    return created;
  }
  if (group.type !== e.type) throw invalid(e.path, `it is a ${e.type} linked to the ${group.type} ${group.firstPath}`);
  if (e.nlink !== group.inode.nlink) throw invalid(e.path, `nlink ${e.nlink} differs from ${group.inode.nlink} of ${group.firstPath}`);
  group.seen++;
  if (group.seen > group.inode.nlink) {
    throw invalid(e.path, `more than nlink=${group.inode.nlink} entries share linkId ${id} with ${group.firstPath}`);
  }
  return group;
}

function checkGroupsComplete(groups: Map<string, LinkGroup>): void {
  for (const [id, g] of groups) {
    if (g.seen !== g.inode.nlink) {
      throw invalid(g.firstPath, `nlink=${g.inode.nlink} but ${g.seen} entries share linkId ${id}`);
    }
  }
}

async function writeEntry(sink: Sink, e: CpioEntry, nameBytes: number, inode: Inode, first: boolean): Promise<void> {
  if (e.type === 'symlink') {
    const target = e.linkTarget as string;
    await sink.header(inode, Buffer.byteLength(target), e.path, nameBytes, target);
  } else if (e.type === 'file' && first && e.data !== undefined) {
    await sink.header(inode, e.data.length, e.path, nameBytes, '');
    await sink.bytes(e.data);
  } else if (e.type === 'file' && first) {
    await sink.file(e, inode, nameBytes);
  } else {
    await sink.header(inode, 0, e.path, nameBytes, '');
  }
}

/**
 * Batches headers and file data into large buffers: file contents are read straight
 * into the buffer, so a small file costs one read and no copy, and the stream sees few,
 * big writes.
 */
class Sink {
  total = 0;
  private buf: Buffer;
  private pos = 0;
  private failure: Error | undefined;
  private readonly onError = (err: Error): void => {
    this.failure ??= err;
  };

  constructor(
    private readonly out: Writable,
    private readonly chunkSize: number,
    private readonly reuse: (() => Buffer | undefined) | undefined,
  ) {
    this.buf = this.freshBuffer();
    out.on('error', this.onError);
  }

  /** Writes a header, the name, and a short inline body (a symlink target); pads both. */
  async header(inode: Inode, fileSize: number, name: string, nameBytes: number, inline: string): Promise<void> {
    const inlineBytes = inline === '' ? 0 : Buffer.byteLength(inline);
    const need = HEADER_SIZE + nameBytes + 4 + inlineBytes + 3; // with NUL and padding
    if (this.chunkSize - this.pos < need) await this.flush();
    const b = this.buf;
    let o = this.pos;
    b.write('070701', o, 'latin1');
    putHex8(b, o + 6, inode.ino);
    putHex8(b, o + 14, inode.mode);
    putHex8(b, o + 22, inode.uid);
    putHex8(b, o + 30, inode.gid);
    putHex8(b, o + 38, inode.nlink);
    putHex8(b, o + 46, inode.mtime);
    putHex8(b, o + 54, fileSize);
    putHex8(b, o + 62, 0); // devmajor: the kernel keys hardlinks by (dev, ino); one device suffices
    putHex8(b, o + 70, 0); // devminor
    putHex8(b, o + 78, inode.rdevMajor);
    putHex8(b, o + 86, inode.rdevMinor);
    putHex8(b, o + 94, nameBytes + 1);
    putHex8(b, o + 102, 0); // check: only used by the "070702" crc format
    o += HEADER_SIZE;
    o += b.write(name, o, 'utf8');
    b[o++] = 0;
    o = zeroPad(b, o, o - this.pos);
    if (inlineBytes > 0) {
      o += b.write(inline, o, 'utf8');
      o = zeroPad(b, o, inlineBytes);
    }
    this.total += o - this.pos;
    this.pos = o;
  }

  /** Copies an in-memory body, then pads it. */
  async bytes(data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) {
      if (this.pos === this.chunkSize) await this.flush();
      const n = data.copy(this.buf, this.pos, done);
      done += n;
      this.pos += n;
      this.total += n;
    }
    await this.pad(data.length);
  }

  /** Streams a file's content, failing if it is not exactly the size the header announces. */
  async file(e: CpioEntry, inode: Inode, nameBytes: number): Promise<void> {
    const source = e.source as string;
    const fd = openSource(e.path, source);
    let size: number;
    try {
      // The walk already knows the size; reading exactly that much proves it unchanged.
      size = e.size ?? statSource(fd, e.path, source).size;
      checkSize(e.path, size);
      await this.header(inode, size, e.path, nameBytes, '');
      await this.readBody(fd, e.path, source, size);
    } finally {
      closeSync(fd);
    }
    await this.pad(size);
  }

  private async readBody(fd: number, path: string, source: string, size: number): Promise<void> {
    let left = size;
    // A regular file returns fewer bytes than asked only at its end, so asking for one
    // byte more than remains both reads the rest and proves the file has not grown.
    let atEof = false;
    while (left > 0) {
      if (this.pos === this.chunkSize) await this.flush();
      const want = Math.min(left + 1, this.chunkSize - this.pos);
      const n = readFrom(fd, this.buf, this.pos, want, path, source);
      if (n === 0 || n > left) throw sizeChanged(fd, path, source, size);
      atEof = n < want;
      left -= n;
      this.pos += n;
      this.total += n;
    }
    if (!atEof && readFrom(fd, Buffer.alloc(1), 0, 1, path, source) > 0) throw sizeChanged(fd, path, source, size);
  }

  private async pad(bodyBytes: number): Promise<void> {
    if (this.chunkSize - this.pos < 3) await this.flush();
    const end = zeroPad(this.buf, this.pos, bodyBytes);
    this.total += end - this.pos;
    this.pos = end;
  }

  /** Hands the filled part of the buffer to the stream and starts a fresh one. */
  private async flush(): Promise<void> {
    this.throwIfFailed();
    if (this.pos === 0) return;
    // The stream owns the chunk from here on: only `reuse` may give its memory back.
    const chunk = this.buf.subarray(0, this.pos);
    this.buf = this.freshBuffer();
    this.pos = 0;
    const ok = this.out.write(chunk);
    if (!ok && this.out.writableLength >= MAX_QUEUED) await this.drained();
    // File reads are synchronous: yield so the event loop moves queued bytes to the consumer.
    else await new Promise<void>((resolve) => setImmediate(resolve));
    this.throwIfFailed();
  }

  async finish(): Promise<void> {
    await this.flush();
    this.out.end();
    await finished(this.out, { readable: false });
    this.throwIfFailed();
  }

  release(): void {
    this.out.off('error', this.onError);
  }

  private freshBuffer(): Buffer {
    const spare = this.reuse?.();
    return spare !== undefined && spare.length === this.chunkSize ? spare : Buffer.allocUnsafeSlow(this.chunkSize);
  }

  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.out.destroyed) {
        reject(this.failure ?? new Error('the output stream closed before the archive was complete'));
        return;
      }
      const done = (err?: Error): void => {
        this.out.off('drain', onDrain);
        this.out.off('error', onFail);
        this.out.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onFail = (err: Error): void => done(err);
      const onClose = (): void => done(this.failure ?? new Error('the output stream closed before the archive was complete'));
      this.out.on('drain', onDrain);
      this.out.on('error', onFail);
      this.out.on('close', onClose);
    });
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }
}

function putHex8(b: Buffer, off: number, value: number): void {
  let v = value;
  for (let i = 7; i >= 0; i--) {
    b[off + i] = HEX[v & 15] as number;
    v >>>= 4;
  }
}

/** Zero-fills after `len` bytes of name or body so the next field starts 4-aligned. */
function zeroPad(b: Buffer, pos: number, len: number): number {
  const pad = (4 - (len & 3)) & 3;
  b.fill(0, pos, pos + pad);
  return pos + pad;
}

function openSource(path: string, source: string): number {
  try {
    return openSync(source, OPEN_FLAGS);
  } catch (err) {
    throw new BuildError(`failed to archive ${path}: cannot open ${source}: ${describe(err)}`, { step: 'cpio', input: source }, { cause: err });
  }
}

function statSource(fd: number, path: string, source: string): Stats {
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch (err) {
    throw new BuildError(`failed to archive ${path}: cannot stat ${source}: ${describe(err)}`, { step: 'cpio', input: source }, { cause: err });
  }
  if (!st.isFile()) throw changed(path, source, 'it is no longer a regular file');
  return st;
}

/** Says how a source differs from the size its header announced (found by reading). */
function sizeChanged(fd: number, path: string, source: string, expected: number): BuildError {
  const st = statSource(fd, path, source);
  return changed(path, source, `its size is now ${st.size} bytes, the header says ${expected}`);
}

function readFrom(fd: number, b: Buffer, off: number, len: number, path: string, source: string): number {
  try {
    return readSync(fd, b, off, len, null);
  } catch (err) {
    throw new BuildError(`failed to archive ${path}: cannot read ${source}: ${describe(err)}`, { step: 'cpio', input: source }, { cause: err });
  }
}

function isUint(v: number, max: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= max;
}

function checkSize(path: string, size: number): void {
  if (size > U32_MAX) throw limit(path, `the file is ${size} bytes; the newc format holds files up to ${U32_MAX} bytes (4 GiB - 1)`);
}

function checkU32(path: string, field: string, v: number): void {
  if (!isUint(v, U32_MAX)) throw limit(path, `${field} ${v} does not fit the format's unsigned 32-bit field`);
}

function limit(path: string, why: string): BuildError {
  return new BuildError(`failed to archive ${path}: ${why}`, { step: 'cpio', input: path });
}

function invalid(path: string, why: string): BuildError {
  return new BuildError(`failed to archive ${path}: invalid entry: ${why}`, { step: 'cpio', input: path });
}

function changed(path: string, source: string, why: string): BuildError {
  return new BuildError(`failed to archive ${path}: ${source} changed while packing: ${why}`, { step: 'cpio', input: source });
}
