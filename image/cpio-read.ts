import { spawn } from 'node:child_process';
import { RambootError } from '../lib/errors.js';

// Reads files back out of an image segment (a run of zstd-compressed newc archives, as
// builder/segment.ts writes it), for `ramboot plan`: the contents of a few named files,
// without unpacking the archive anywhere. zstd decompresses into a pipe; the newc
// stream is parsed as it arrives and stops as soon as every wanted file was seen.
//
// newc: a 110-byte header of "070701" and 13 fields of 8 hex digits, the NUL-terminated
// name padded to 4 bytes, then the body padded to 4 bytes; TRAILER!!! ends an archive,
// and with it the hardlinks the kernel knows of, and the next one follows.

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
/** Hardlinked bodies up to this size are kept until the archive says which paths share them. */
const LINK_CACHE_MAX = 256 * 1024;

/** What one newc header says (the fields ramboot reads). */
interface Header {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  name: string;
}

/** A pull reader over a stream of chunks: exact reads and skips without copying whole bodies. */
class Chunks {
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  offset = 0;

  constructor(private readonly source: AsyncIterator<Buffer>) {}

  /** Exactly n bytes, or undefined at the end of the stream. */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length - this.off < n) {
      const next = await this.source.next();
      if (next.done) return undefined;
      this.buf = Buffer.concat([this.buf.subarray(this.off), next.value]);
      this.off = 0;
    }
    const out = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    this.offset += n;
    return out;
  }

  /** Skips n bytes; false when the stream ended first. */
  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      const here = Math.min(left, this.buf.length - this.off);
      this.off += here;
      this.offset += here;
      left -= here;
      if (left === 0) break;
      const next = await this.source.next();
      if (next.done) return false;
      this.buf = next.value;
      this.off = 0;
    }
    return true;
  }
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function hex(b: Buffer, field: number): number {
  return parseInt(b.toString('latin1', 6 + field * 8, 14 + field * 8), 16);
}

/** The next header; undefined at a TRAILER!!!, null where the stream ends after one (a segment is a run of archives). */
async function readHeader(c: Chunks, file: string, afterTrailer: boolean): Promise<Header | undefined | null> {
  const at = c.offset;
  const h = await c.read(HEADER_SIZE);
  if (!h && afterTrailer) return null;
  if (!h) throw damaged(file, `the archive ends at byte ${at} without ${TRAILER}`);
  if (h.toString('latin1', 0, 6) !== MAGIC) throw damaged(file, `no newc header at byte ${at}`);
  const nameSize = hex(h, 11);
  const name = await c.read(nameSize + pad4(HEADER_SIZE + nameSize));
  if (!name) throw damaged(file, `the archive ends inside the name at byte ${at}`);
  const path = name.toString('utf8', 0, nameSize - 1);
  if (path === TRAILER) return undefined;
  return { ino: hex(h, 0), mode: hex(h, 1), nlink: hex(h, 4), size: hex(h, 6), name: path };
}

/**
 * The contents of the wanted regular files found in a segment, by path (no leading '/').
 * Bodies larger than maxBytes are left out, and so are files the archive does not hold.
 * A hardlinked file stores its data once, with one of the paths sharing it.
 */
export async function readSegmentFiles(file: string, wanted: Iterable<string>, maxBytes: number): Promise<Map<string, Buffer>> {
  const want = new Set(wanted);
  const found = new Map<string, Buffer>();
  if (want.size === 0) return found;
  const zstd = spawn('zstd', ['-d', '-c', '-q', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  zstd.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
    zstd.once('error', (error) => resolve({ code: null, error }));
    zstd.once('close', (code) => resolve({ code }));
  });
  const linked = new Map<number, Buffer>();
  const waiting = new Map<number, string[]>();
  let ended = false;
  try {
    const c = new Chunks(zstd.stdout[Symbol.asyncIterator]());
    let afterTrailer = false;
    for (;;) {
      if (found.size === want.size) break;
      const h = await readHeader(c, file, afterTrailer);
      if (h === null) {
        ended = true;
        break;
      }
      afterTrailer = h === undefined;
      if (!h) {
        linked.clear();
        waiting.clear();
        continue;
      }
      const regular = (h.mode & S_IFMT) === S_IFREG;
      const keep = regular && h.size <= maxBytes && (want.has(h.name) || (h.nlink > 1 && h.size <= LINK_CACHE_MAX));
      const body = keep ? await c.read(h.size) : undefined;
      if (keep && !body) throw damaged(file, `the archive ends inside ${h.name}`);
      if (!keep && !(await c.skip(h.size))) throw damaged(file, `the archive ends inside ${h.name}`);
      if (!(await c.skip(pad4(h.size)))) throw damaged(file, `the archive ends after ${h.name}`);
      if (!regular) continue;
      if (h.nlink > 1) settleLink(h, body, linked, waiting, want, found);
      else if (body && want.has(h.name)) found.set(h.name, Buffer.from(body));
    }
  } catch (err) {
    const exit = await stop(zstd, exited);
    if (exit.error) throw zstdMissing(file, exit.error);
    if (exit.code !== 0 && exit.code !== null && stderr) throw damaged(file, `zstd: ${stderr.trim()}`);
    throw err;
  }
  // Read to its end, the stream must also have ended well: a damaged later frame would
  // otherwise read as a segment without the files after it.
  const exit = ended ? await exited : await stop(zstd, exited);
  if (exit.error) throw zstdMissing(file, exit.error);
  if (ended && exit.code !== 0) throw damaged(file, `zstd: ${stderr.trim() || `exited with ${exit.code}`}`);
  return found;
}

/** A hardlink group's data arrives with one of its entries (the first, as ramboot writes it). */
function settleLink(h: Header, body: Buffer | undefined, linked: Map<number, Buffer>, waiting: Map<number, string[]>, want: Set<string>, found: Map<string, Buffer>): void {
  if (body && body.length > 0) {
    const data = Buffer.from(body);
    linked.set(h.ino, data);
    for (const p of waiting.get(h.ino) ?? []) found.set(p, data);
    waiting.delete(h.ino);
  }
  if (!want.has(h.name)) return;
  const data = linked.get(h.ino);
  if (data) found.set(h.name, data);
  else if (h.size === 0) waiting.set(h.ino, [...(waiting.get(h.ino) ?? []), h.name]);
  else found.set(h.name, Buffer.alloc(0));
}

/** Ends zstd when the reader stopped early (every wanted file found) and waits for it. */
async function stop(zstd: ReturnType<typeof spawn>, exited: Promise<{ code: number | null; error?: Error }>) {
  zstd.stdout?.destroy();
  if (zstd.exitCode === null && zstd.signalCode === null) zstd.kill('SIGTERM');
  return exited;
}

function damaged(file: string, why: string): RambootError {
  return new RambootError(`failed to read ${file}: ${why}; build the image again`, { step: 'read segment', input: file });
}

function zstdMissing(file: string, err: Error): RambootError {
  return new RambootError(`failed to read ${file}: cannot run zstd (${err.message}); install zstd`, { step: 'read segment', input: file }, { cause: err });
}
