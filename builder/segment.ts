import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { BuildError, CommandError, describe } from '../lib/errors.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { walkTree, type TreeOptions } from './tree.js';

/** This module's part of the base segment's recipe (builder/recipe.ts). */
export const SEGMENT_SOURCE = import.meta.url;

export interface SegmentOptions {
  /** Mode of the new file; secrets pass 0o600. Default 0o644. */
  mode?: number;
  /** One piece, streamed: nothing of it is written anywhere but the segment (secrets). */
  whole?: boolean;
}

/** Pieces are compressed one by one, so a higher level than one stream needs gets their size back. */
const ZSTD_LEVEL = 6;

export interface SegmentResult {
  file: string;
  /** Hex sha256 of the compressed bytes. */
  sha256: string;
  bytes: number;
}

// For a segment written whole (the secrets): multithreaded zstd cuts its input into jobs
// by size alone, so its output is the same for any thread count and however the input
// arrives (checked with zstd 1.5.4: -T1, -T2, -T8 and small pipe writes give identical
// bytes); --single-thread would differ.
const ZSTD_ARGS = ['-T0', `-${ZSTD_LEVEL}`, '-q', '--no-progress', '-c'];
const ZSTD_COMMAND = `zstd ${ZSTD_ARGS.join(' ')}`;
// Archive bytes handed to the pump thread and not yet in zstd's pipe.
const MAX_IN_FLIGHT = 16 * 1024 * 1024;

/**
 * Writes `entries` as an initramfs segment and returns its hash. The file is created
 * new (an existing path is an error) with its final mode, and is removed again if
 * anything fails.
 *
 * A segment is a run of pieces, each a newc archive (with its own TRAILER!!!) compressed
 * as a zstd frame of its own; the kernel unpacks one after the other, as it does separate
 * initrd files. Pieces end where the path of the next entry says (pieces()), so a package
 * change rewrites the few pieces it touches and leaves the others byte for byte as they
 * were: what deploy/delta.ts then sends. `whole` writes one piece, streamed through
 * zstd: the secrets segment, whose plaintext never touches the disk.
 */
export async function writeSegment(
  entries: Iterable<CpioEntry> | AsyncIterable<CpioEntry>,
  outFile: string,
  opts: SegmentOptions = {},
): Promise<SegmentResult> {
  const mode = opts.mode ?? 0o644;
  const fh = await open(outFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode).catch((err: unknown) => {
    throw new BuildError(`failed to create ${outFile}: ${describe(err)}`, { step: 'write segment', input: outFile }, { cause: err });
  });
  try {
    // The umask may have narrowed the mode; the file is still empty, so nothing is exposed.
    await fh.chmod(mode);
    const { sha256, bytes } = opts.whole ? await compress(entries, outFile, fh.fd) : await compressPieces(entries, outFile, fh.fd);
    await fh.close();
    return { file: outFile, sha256, bytes };
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(outFile).catch(() => undefined);
    throw err;
  }
}

// Pieces cut where the paths say, so that an added file moves no cut but its own piece's:
// before an entry whose path hashes to 0 mod 8 once a piece has 16 KiB, to 0 mod 2 once
// it has 128 KiB (so pieces stay near that size without a cut by count, which would move
// every later cut), and at 512 KiB at the latest; an entry of 128 KiB or more is a piece
// of its own. Measured on the Debian example's base with `less` added: the pieces that
// differ compress to 0.5% of the image (1.9% with 64–512 KiB pieces cut at 1 in 8), and
// all pieces at zstd -6 are 7.8% larger than one stream at -3 (docs/decisions.md, "Delta
// uploads"). Hardlinked entries go last, in one piece: the kernel forgets links at each
// TRAILER!!!.
const PIECE_MIN = 16 * 1024;
const PIECE_NORMAL = 128 * 1024;
const PIECE_MAX = 512 * 1024;

const entryBytes = (e: CpioEntry) => 110 + e.path.length + (e.type === 'file' ? (e.size ?? e.data?.length ?? 0) : 0);

/** Whether a piece of `acc` bytes ends before `e`. */
function cutBefore(e: CpioEntry, acc: number): boolean {
  if (acc < PIECE_MIN) return false;
  if (acc >= PIECE_MAX || entryBytes(e) >= PIECE_NORMAL) return true;
  const h = createHash('sha256').update(e.path).digest().readUInt32BE(0);
  return h % (acc < PIECE_NORMAL ? 8 : 2) === 0;
}

/** `entries` cut into pieces, hardlinked ones last. */
export function pieces(entries: CpioEntry[]): CpioEntry[][] {
  const out: CpioEntry[][] = [];
  let cur: CpioEntry[] = [];
  let acc = 0;
  const cut = () => {
    out.push(cur);
    cur = [];
    acc = 0;
  };
  for (const e of entries.filter((x) => x.linkId === undefined)) {
    if (cur.length > 0 && cutBefore(e, acc)) cut();
    cur.push(e);
    acc += entryBytes(e);
    if (entryBytes(e) >= PIECE_NORMAL) cut();
  }
  if (cur.length > 0) out.push(cur);
  const linked = entries.filter((x) => x.linkId !== undefined);
  if (linked.length > 0) out.push(linked);
  return out.length > 0 ? out : [[]];
}

/** Each piece as an archive in a scratch directory beside the segment, then one zstd over them all (a frame per file). */
async function compressPieces(entries: Iterable<CpioEntry> | AsyncIterable<CpioEntry>, outFile: string, fd: number): Promise<{ sha256: string; bytes: number }> {
  const all: CpioEntry[] = [];
  for await (const e of entries) all.push(e);
  // Beside the segment and named after it: a build that was killed leaves it where the next one sweeps (sweep.ts).
  const dir = await mkdtemp(`${outFile}-pieces-`);
  try {
    const files: string[] = [];
    for (const [i, piece] of pieces(all).entries()) {
      const name = String(i).padStart(5, '0');
      const stream = createWriteStream(join(dir, name));
      await writeCpio(piece, stream).catch((err: unknown) => {
        stream.destroy();
        if (err instanceof BuildError) throw err;
        throw new BuildError(`failed to write ${outFile}: ${describe(err)}`, { step: 'write segment', input: outFile }, { cause: err });
      });
      files.push(name);
    }
    // Names relative to the scratch directory keep the command line short however many
    // pieces there are; -T1 because the CLI's default thread count is not the same in
    // every zstd version, and the bytes must not depend on it.
    const args = ['-T1', `-${ZSTD_LEVEL}`, '-q', '--no-progress', '-c', ...files];
    const r = await new Promise<{ code: number | null; stderr: string; error?: Error }>((resolve) => {
      const child = spawn('zstd', args, { cwd: dir, stdio: ['ignore', fd, 'pipe'] });
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      child.once('error', (error) => resolve({ code: null, stderr, error }));
      child.once('close', (code) => resolve({ code, stderr }));
    });
    if (r.error) throw new BuildError(`failed to run zstd for ${outFile}: ${describe(r.error)}`, { step: 'write segment', input: outFile });
    if (r.code !== 0) {
      if (/No space left/i.test(r.stderr)) throw new BuildError(`failed to write ${outFile}: ENOSPC: ${r.stderr.trim()}`, { step: 'write segment', input: outFile });
      throw new CommandError(`compress ${outFile}`, `zstd -T1 -${ZSTD_LEVEL} -q --no-progress -c PIECE...`, r.code ?? undefined, r.stderr);
    }
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of createReadStream(outFile) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    return { sha256: hash.digest('hex'), bytes };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Walks `rootDir` and writes it as a segment. */
export async function packTree(rootDir: string, outFile: string, opts: TreeOptions & SegmentOptions = {}): Promise<SegmentResult> {
  // Walked on first use, so zstd and its worker start up meanwhile.
  const entries = { *[Symbol.iterator]() { yield* walkTree(rootDir, opts); } };
  return writeSegment(entries, outFile, opts);
}

async function compress(
  entries: Iterable<CpioEntry> | AsyncIterable<CpioEntry>,
  outFile: string,
  fd: number,
): Promise<{ sha256: string; bytes: number }> {
  const pump = new ZstdPump(outFile, fd);
  try {
    await writeCpio(entries, pump, { reuse: () => pump.spare() }).catch(async (err: unknown) => {
      // Wait for zstd to be gone before the worker is, so it is reaped, not left a zombie.
      pump.abort();
      await pump.result.catch(() => undefined);
      throw err;
    });
    return await pump.result;
  } finally {
    await pump.stop();
  }
}

interface PumpDone {
  code: number | null;
  signal: string | null;
  spawnError?: string;
  outputError?: string;
  stderr: string;
  sha256: string;
  bytes: number;
}

/** `ack` returns a chunk's memory once zstd has read it. */
type PumpMessage = { ack: ArrayBuffer; bytes: number } | { done: PumpDone };

/**
 * The archive's way into zstd. The cpio writer reads source files synchronously, which
 * stalls the event loop that would feed zstd's pipe; so a worker thread owns zstd,
 * feeds its stdin from chunks handed over without copying, and hashes and writes its
 * output to the segment file while main reads the next files.
 */
class ZstdPump extends Writable {
  readonly result: Promise<{ sha256: string; bytes: number }>;
  private readonly worker: Worker;
  private inFlight = 0;
  private readonly spares: Buffer[] = [];
  private held: (() => void) | undefined;
  private finalCallback: ((err?: Error) => void) | undefined;
  private aborted = false;
  private settled = false;

  constructor(
    private readonly outFile: string,
    fd: number,
  ) {
    super();
    this.worker = new Worker(PUMP_SOURCE, { eval: true, workerData: { args: ZSTD_ARGS, fd } });
    this.result = new Promise((resolve, reject) => {
      this.worker.on('message', (m: PumpMessage) => {
        if ('ack' in m) return this.ack(m.ack, m.bytes);
        const err = this.failure(m.done);
        if (err) reject(err);
        else resolve({ sha256: m.done.sha256, bytes: m.done.bytes });
        this.settle(err);
      });
      const lost = (cause: unknown): void => {
        const err = new BuildError(`failed to compress ${this.outFile}: the zstd pump stopped: ${describe(cause)}`, {
          step: 'write segment',
          input: this.outFile,
        });
        reject(err);
        this.settle(err);
      };
      this.worker.once('error', lost);
      this.worker.once('exit', (code) => lost(`exit ${code}`));
    });
    // Whoever awaits first sees the failure; this keeps an unawaited copy from being unhandled.
    this.result.catch(() => undefined);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error) => void): void {
    // writeCpio gives up each chunk it writes, so its memory can move to the worker
    // (which detaches it here) and come back through spare().
    this.inFlight += chunk.length;
    this.worker.postMessage({ chunk }, [chunk.buffer as ArrayBuffer]);
    if (this.inFlight < MAX_IN_FLIGHT) callback();
    else this.held = callback;
  }

  override _final(callback: (err?: Error) => void): void {
    this.finalCallback = callback;
    this.worker.postMessage({ end: true });
  }

  /** Stops zstd after a failure on our side; its exit is then no error of its own. */
  abort(): void {
    this.aborted = true;
    this.worker.postMessage({ abort: true });
  }

  async stop(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }

  /** A chunk zstd has consumed, to be filled again. */
  spare(): Buffer | undefined {
    return this.spares.pop();
  }

  private ack(memory: ArrayBuffer, n: number): void {
    this.spares.push(Buffer.from(memory));
    this.inFlight -= n;
    if (this.held && this.inFlight < MAX_IN_FLIGHT) {
      const callback = this.held;
      this.held = undefined;
      callback();
    }
  }

  /** zstd is done: finish the stream, or fail it if zstd stopped early or failed. */
  private settle(err: Error | undefined): void {
    if (this.settled) return;
    this.settled = true;
    if (this.finalCallback) this.finalCallback(err);
    else if (!this.aborted && !this.destroyed) {
      this.destroy(err ?? new BuildError(`failed to compress ${this.outFile}: zstd exited before the archive was complete`, {
        step: 'write segment',
        input: this.outFile,
      }));
    }
  }

  private failure(done: PumpDone): Error | undefined {
    const ctx = { step: 'write segment', input: this.outFile };
    if (done.spawnError) return new BuildError(`failed to run zstd for ${this.outFile}: ${done.spawnError}`, ctx);
    // Checked before the exit status: a failed write is why the pump killed zstd.
    if (done.outputError) return new BuildError(`failed to write ${this.outFile}: ${done.outputError}`, ctx);
    if (done.code !== 0) {
      const status = done.code ?? undefined;
      return new CommandError(`compress ${this.outFile}`, ZSTD_COMMAND, status, done.stderr || `killed by ${done.signal}`);
    }
    return undefined;
  }
}

// Runs in the worker (plain CommonJS: the worker cannot load this TypeScript module).
// Output is written synchronously: this thread has nothing else to do meanwhile, and a
// thread-pool round trip per 64 KiB read from zstd costs more than the write itself.
const PUMP_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { spawn } = require('node:child_process');
const { createHash } = require('node:crypto');
const { writeSync } = require('node:fs');

const child = spawn('zstd', workerData.args, { stdio: ['pipe', 'pipe', 'pipe'] });
let stderr = '';
child.stderr.setEncoding('utf8').on('data', (s) => { if (stderr.length < 65536) stderr += s; });
// A zstd that dies early breaks the pipe; its exit status tells why.
child.stdin.on('error', () => {});
const hash = createHash('sha256');
let bytes = 0;
let outputError;
child.stdout.on('data', (chunk) => {
  if (outputError) return;
  try {
    for (let done = 0; done < chunk.length; ) done += writeSync(workerData.fd, chunk, done);
    hash.update(chunk);
    bytes += chunk.length;
  } catch (err) {
    outputError = err.message;
    child.kill('SIGKILL');
  }
});
child.once('error', (err) => finish({ code: null, signal: null, spawnError: err.message }));
child.once('close', (code, signal) => finish({ code, signal }));
let finished = false;
function finish(exit) {
  if (finished) return;
  finished = true;
  parentPort.postMessage({ done: { ...exit, outputError, stderr, sha256: hash.digest('hex'), bytes } });
}
parentPort.on('message', (m) => {
  if (m.chunk) {
    const memory = m.chunk.buffer;
    const bytes = m.chunk.byteLength;
    child.stdin.write(m.chunk, () => parentPort.postMessage({ ack: memory, bytes }, [memory]));
  }
  else if (m.end) child.stdin.end();
  else if (m.abort) child.kill('SIGKILL');
});
`;
