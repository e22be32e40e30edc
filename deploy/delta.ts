import { createHash } from 'node:crypto';
import { shq } from './ssh.js';

// A segment the medium lacks is often a new version of one it has: a package change
// rewrites a few files of a 45 MB base. A segment is a run of small archives, each its
// own zstd frame, cut where paths say, and cpio inodes follow the path (builder/segment.ts,
// builder/cpio.ts), so the pieces a change does not touch keep their compressed bytes.
// The new file is cut into content-defined chunks; a chunk the basis (the same segment of
// a label on the medium) also holds is copied there on the machine, the rest is sent. The
// machine runs nothing but `dd` and `sha256sum`, and the result is named only when its
// sha256 is the segment's (deploy/medium.ts).

/** A piece of the target: bytes of the basis, or of the literal file sent along. */
export interface DeltaOp {
  from: 'basis' | 'literal';
  offset: number;
  length: number;
}

export interface Delta {
  ops: DeltaOp[];
  /** What the machine cannot find in the basis, in target order. */
  literal: Buffer;
}

// Chunks of 1–32 KiB, 4 KiB apart on average past the minimum (a gear hash, as FastCDC):
// small enough that a change costs little beyond itself, large enough that the ops stay few.
// The cut tests the hash's high bits, which depend on the last 32 bytes (the low ones on
// the last few only, so runs of one byte would cut at every minimum or never).
const MIN_CHUNK = 1024;
const MAX_CHUNK = 32 * 1024;
const CUT_SHIFT = 32 - 12;

/** The gear table: fixed pseudo-random words, so both sides cut the same content alike. */
const GEAR = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) table[i] = createHash('sha256').update(`ramboot-gear-${i}`).digest().readUInt32LE(0);
  return table;
})();

/** Ends of the content-defined chunks of `buf` (each end is the next chunk's start). */
export function chunkEnds(buf: Buffer): number[] {
  const ends: number[] = [];
  let start = 0;
  let h = 0;
  for (let i = 0; i < buf.length; i++) {
    h = ((h << 1) + GEAR[buf[i]!]!) >>> 0;
    const len = i + 1 - start;
    if ((len >= MIN_CHUNK && h >>> CUT_SHIFT === 0) || len >= MAX_CHUNK) {
      ends.push(i + 1);
      start = i + 1;
      h = 0;
    }
  }
  if (start < buf.length) ends.push(buf.length);
  return ends;
}

const digest = (b: Buffer) => createHash('sha256').update(b).digest('base64');

/** How to make `target` from `basis` and a literal: copies of the chunks both hold, the rest sent. */
export function makeDelta(basis: Buffer, target: Buffer): Delta {
  const known = new Map<string, number>();
  let start = 0;
  for (const end of chunkEnds(basis)) {
    const key = digest(basis.subarray(start, end));
    if (!known.has(key)) known.set(key, start);
    start = end;
  }
  const ops: DeltaOp[] = [];
  const literal: Buffer[] = [];
  let literalBytes = 0;
  const push = (from: DeltaOp['from'], offset: number, length: number) => {
    const last = ops.at(-1);
    if (last && last.from === from && last.offset + last.length === offset) last.length += length;
    else ops.push({ from, offset, length });
  };
  start = 0;
  for (const end of chunkEnds(target)) {
    const chunk = target.subarray(start, end);
    const at = known.get(digest(chunk));
    if (at !== undefined) push('basis', at, chunk.length);
    else {
      push('literal', literalBytes, chunk.length);
      literal.push(chunk);
      literalBytes += chunk.length;
    }
    start = end;
  }
  return { ops, literal: Buffer.concat(literal) };
}

/** A delta is used only when it costs less than half the file: a file of new bytes (a blob in root/) goes whole, as a plain upload that a cut resumes byte for byte. */
export function worthDelta(deltaBytes: number, wholeBytes: number): boolean {
  return deltaBytes < wholeBytes / 2;
}

/** The bytes the delta costs to send: the literal and the script that applies it. */
export function deltaBytes(d: Delta, paths: AssemblyPaths): number {
  return d.literal.length + Buffer.byteLength(assemblyScript(d.ops, paths));
}

export interface AssemblyPaths {
  basis: string;
  literal: string;
  out: string;
}

/**
 * The shell script that writes the target on the machine. `dd` with skip_bytes and
 * count_bytes is in GNU coreutils and in busybox (Alpine); nothing else is needed.
 */
export function assemblyScript(ops: DeltaOp[], p: AssemblyPaths): string {
  const src = { basis: shq(p.basis), literal: shq(p.literal) };
  const lines = ops.map((o) => `dd if=${src[o.from]} bs=65536 iflag=skip_bytes,count_bytes skip=${o.offset} count=${o.length} status=none`);
  // A new inode: a writer of an earlier, cut assembly may still write into the old one.
  return ['set -e', `rm -f ${shq(p.out)}`, '{', ...lines, `} > ${shq(p.out)}`, ''].join('\n');
}
