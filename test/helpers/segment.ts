import { execFileSync } from 'node:child_process';

// A segment is a run of newc archives, each ending in TRAILER!!! (builder/segment.ts).
// GNU cpio stops at the first trailer, so tests cut the stream into its archives first.

const HEADER = 110;
const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** The segment's archives, decompressed, in order. */
export function segmentArchives(segment: string): Buffer[] {
  const data = execFileSync('zstd', ['-dc', segment], { maxBuffer: 1 << 30 });
  const out: Buffer[] = [];
  let start = 0;
  let at = 0;
  while (at < data.length) {
    if (data.toString('latin1', at, at + 6) !== '070701') throw new Error(`${segment}: no newc header at byte ${at}`);
    const field = (i: number) => parseInt(data.toString('latin1', at + 6 + i * 8, at + 14 + i * 8), 16);
    const nameSize = field(11);
    const name = data.toString('utf8', at + HEADER, at + HEADER + nameSize - 1);
    const body = at + HEADER + nameSize + pad4(HEADER + nameSize);
    at = body + field(6) + pad4(field(6));
    if (name === 'TRAILER!!!') {
      out.push(data.subarray(start, at));
      start = at;
    }
  }
  return out;
}

/** Unpacks every archive of the segment into `dest` with GNU cpio, as the kernel would in turn. */
export function unpackSegment(segment: string, dest: string): void {
  for (const a of segmentArchives(segment)) {
    execFileSync('cpio', ['-idmu', '--no-absolute-filenames', '--quiet'], { cwd: dest, input: a, stdio: ['pipe', 'ignore', 'inherit'] });
  }
}
