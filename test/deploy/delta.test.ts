import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSegment } from '../../builder/segment.js';
import { walkTree } from '../../builder/tree.js';
import { assemblyScript, chunkEnds, makeDelta } from '../../deploy/delta.js';
import { MINIROOTFS } from '../helpers/apk.js';

// Two segments as the builder writes them (pieces of cpio, each its own zstd frame), the
// second with one file added in the middle and one changed, as a package change does to the base.

let work: string;
let before: Buffer;
let after: Buffer;

/** A tree of 2000 files of about 8 KiB of varied text: 16 MiB that compress about 3:1, like a base. */
function tree(dir: string): void {
  for (let i = 0; i < 2000; i++) {
    const path = join(dir, `usr/lib/d${String(i).padStart(4, '0')}`, 'file');
    mkdirSync(join(path, '..'), { recursive: true });
    const words = Array.from({ length: 1200 }, (_, k) => createHash('sha256').update(`${i}/${k}`).digest('hex').slice(0, (k % 7) + 2));
    writeFileSync(path, `${words.join(' ')}\n`);
  }
}

async function segment(dir: string, out: string): Promise<Buffer> {
  await writeSegment(walkTree(dir, { mtime: () => 0 }), out);
  return readFileSync(out);
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ramboot-delta-test-'));
  tree(join(work, 'a'));
  before = await segment(join(work, 'a'), join(work, 'a.cpio.zst'));
  tree(join(work, 'b'));
  mkdirSync(join(work, 'b/usr/lib/d1000-new'), { recursive: true });
  writeFileSync(join(work, 'b/usr/lib/d1000-new/file'), randomBytes(20_000));
  writeFileSync(join(work, 'b/usr/lib/d0300/file'), 'changed\n');
  after = await segment(join(work, 'b'), join(work, 'b.cpio.zst'));
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Applies a delta as the machine does: the script under `sh`, from files in `root`. */
function apply(root: string, chroot: boolean): Buffer {
  const d = makeDelta(before, after);
  mkdirSync(join(root, 'm'), { recursive: true });
  writeFileSync(join(root, 'm/basis'), before);
  writeFileSync(join(root, 'm/literal'), d.literal);
  const at = chroot ? '' : root;
  const script = assemblyScript(d.ops, { basis: `${at}/m/basis`, literal: `${at}/m/literal`, out: `${at}/m/out` });
  execFileSync(chroot ? 'chroot' : 'sh', chroot ? [root, '/bin/sh', '-s'] : ['-s'], { input: script });
  return readFileSync(join(root, 'm/out'));
}

describe('delta', () => {
  it('cuts the same content at the same places wherever it sits', () => {
    const body = randomBytes(200_000);
    const shifted = Buffer.concat([randomBytes(777), body]);
    const ends = (b: Buffer, skip: number) => chunkEnds(b).map((e) => e - skip).filter((e) => e > 40_000 && e < 190_000);
    expect(ends(shifted, 777)).toEqual(ends(body, 0));
  });

  it('sends a few percent of a segment when a package change adds and changes a file', () => {
    const d = makeDelta(before, after);
    expect(d.literal.length).toBeGreaterThan(0);
    expect(d.literal.length).toBeLessThan(after.length * 0.05);
    const copied = d.ops.filter((o) => o.from === 'basis').reduce((n, o) => n + o.length, 0);
    expect(copied + d.literal.length).toBe(after.length);
  });

  it('the script rebuilds the segment byte for byte with GNU dd', () => {
    expect(apply(join(work, 'gnu'), false).equals(after)).toBe(true);
  });

  it('the script rebuilds the segment byte for byte with busybox dd (the Alpine minirootfs)', () => {
    const root = join(work, 'alpine');
    mkdirSync(root);
    execFileSync('tar', ['-xzf', MINIROOTFS, '-C', root]);
    expect(apply(root, true).equals(after)).toBe(true);
  });

  it('a basis with nothing in common gives a delta no smaller than the file', () => {
    const d = makeDelta(randomBytes(100_000), after);
    expect(d.literal.length).toBe(after.length);
    expect(d.ops).toEqual([{ from: 'literal', offset: 0, length: after.length }]);
  });
});

