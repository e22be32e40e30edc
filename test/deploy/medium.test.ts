import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PreflightError, armOnce, basesFor, checkSpace, clearOnce, inspectMedium, parseDfAvailable, parseLs, parseMounts, planUpload, readSlots, removeUnreferenced, uploadFiles, writeCfg, type CandidateFile } from '../../deploy/medium.js';
import { packTree } from '../../builder/segment.js';
import { makeDelta } from '../../deploy/delta.js';
import { readRunning } from '../../deploy/running.js';
import { CFG_PATH, contentPath, parseSyslinuxCfg, type SlotTable } from '../../deploy/slots.js';
import { connect, type Session } from '../../deploy/ssh.js';
import { mountExt2, mountReadOnly, mountTmpfs, startSshd, type TestMount, type TestSshd } from '../helpers/sshd.js';

describe('parsers', () => {
  it('reads /proc/mounts with escaped spaces', () => {
    expect(parseMounts('/dev/sdb1 /media/usb\\040stick vfat rw,relatime,fmask=0022 0 0\nproc /proc proc rw 0 0\n')).toEqual([
      { source: '/dev/sdb1', mountPoint: '/media/usb stick', fsType: 'vfat', options: ['rw', 'relatime', 'fmask=0022'] },
      { source: 'proc', mountPoint: '/proc', fsType: 'proc', options: ['rw'] },
    ]);
  });

  it.each([
    ['Filesystem     1024-blocks  Used Available Capacity Mounted on\n/dev/sdb1          7987200 61234   7925966       1% /media/usb\n', 7925966 * 1024],
    // busybox: the same POSIX columns
    ['Filesystem           1024-blocks    Used Available Capacity Mounted on\n/dev/sdb1              7987200     61234   7925966   1% /media/usb\n', 7925966 * 1024],
    ['df: /nope: No such file or directory\n', undefined],
  ])('reads df -P -k %#', (text, expected) => {
    expect(parseDfAvailable(text)).toBe(expected);
  });

  it('reads ls -ln (coreutils and busybox date formats), regular files only', () => {
    const text = [
      'total 12',
      '-rwxr-xr-x 1 0 0 12345 Jan  1  2024 aaa.vmlinuz',
      '-rw-r--r--    1 0        0          99 Mar  3 10:00 bbb.cpio.zst.part',
      'drwxr-xr-x 2 0 0 4096 Jan  1 00:00 lost+found',
    ].join('\n');
    expect([...parseLs(text)]).toEqual([
      ['aaa.vmlinuz', 12345],
      ['bbb.cpio.zst.part', 99],
    ]);
  });
});

// Against a local OpenSSH server standing in for the NAS, with real mounts as its medium.

let sshd: TestSshd;
let work: string;
const mounts: TestMount[] = [];

beforeAll(async () => {
  sshd = await startSshd();
  work = await mkdtemp(join(tmpdir(), 'ramboot-medium-test-'));
});
afterEach(async () => {
  while (mounts.length) await mounts.pop()!.unmount();
});
afterAll(async () => {
  await sshd.stop();
  await rm(work, { recursive: true, force: true });
});

async function medium(kind: 'ext2' | 'tmpfs' | 'ro', size = 64): Promise<string> {
  const m = kind === 'ext2' ? await mountExt2(size) : kind === 'tmpfs' ? await mountTmpfs(size) : await mountReadOnly();
  mounts.push(m);
  return m.dir;
}

async function localFile(name: string, bytes: number, kind: 'vmlinuz' | 'cpio.zst' = 'cpio.zst'): Promise<CandidateFile> {
  const data = randomBytes(bytes);
  const local = join(work, name);
  await writeFile(local, data);
  const sha256 = createHash('sha256').update(data).digest('hex');
  return { path: contentPath(sha256, kind), sha256, bytes, local };
}

/** A writer a cut run left on the machine: it keeps writing into the file it opened, from its start. */
function leftoverWriter(path: string): { stop: () => Promise<void> } {
  const p = execa('sh', ['-c', `exec 3<>'${path}'; while :; do printf 0123456789abcdef >&3; sleep 0.005; done`], { reject: false });
  return {
    stop: async () => {
      p.kill();
      await p;
    },
  };
}

/** A syslinux.cfg whose lts label names `f`: the medium's verified file a delta is made from. */
async function labelled(s: Session, m: string, f: CandidateFile): Promise<SlotTable> {
  const slots: SlotTable = { lts: { buildId: 'a', kernel: 'boot/ramboot/k.vmlinuz', initrds: [f.path], append: '' } };
  await mkdir(join(m, 'boot/syslinux'), { recursive: true });
  await writeCfg(s, m, slots);
  return slots;
}

/** Two base segments as the builder writes them, the second with a file added and one changed. */
async function segmentPair(added = 10_000): Promise<[CandidateFile, CandidateFile]> {
  const dirs = [join(work, `tree-${randomBytes(4).toString('hex')}`), join(work, `tree-${randomBytes(4).toString('hex')}`)];
  // Hex of random bytes: compresses about 2:1, like the files of a base.
  const content = Array.from({ length: 600 }, () => randomBytes(4096).toString('hex'));
  for (const dir of dirs) {
    for (let i = 0; i < 600; i++) {
      await mkdir(join(dir, `lib/d${String(i).padStart(3, '0')}`), { recursive: true });
      await writeFile(join(dir, `lib/d${String(i).padStart(3, '0')}/f`), content[i]!);
    }
  }
  await writeFile(join(dirs[1]!, 'lib/d300/added'), randomBytes(added));
  await writeFile(join(dirs[1]!, 'lib/d100/f'), 'changed');
  const out: CandidateFile[] = [];
  for (const dir of dirs) {
    const r = await packTree(dir, `${dir}.cpio.zst`, { mtime: () => 0 });
    out.push({ path: contentPath(r.sha256, 'cpio.zst'), sha256: r.sha256, bytes: r.bytes, local: r.file, segment: 'base' });
  }
  return [out[0]!, out[1]!];
}

async function preflightError(m: string, sshdFor = sshd): Promise<PreflightError> {
  const s = await connect(sshdFor.target());
  try {
    const err = await inspectMedium(s, m).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreflightError);
    return err as PreflightError;
  } finally {
    s.close();
  }
}

describe('preflight', () => {
  it('reads a mounted, writable medium', async () => {
    const m = await medium('ext2');
    const s = await connect(sshd.target());
    const state = await inspectMedium(s, m);
    expect(state.mount.fsType).toBe('ext2');
    expect(state.freeBytes).toBeGreaterThan(50 * 1024 * 1024);
    expect(state.firmware).toBe('bios');
    expect(state.cfg).toEqual({ text: undefined, slots: {}, managed: false });
    expect(state.files.size).toBe(0);
    expect((await readRunning(s)).bootId).toBe((await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim());
    s.close();
  });

  it('refuses a medium that is not mounted', async () => {
    const plain = join(work, 'not-a-mount');
    await mkdir(plain);
    const err = await preflightError(plain);
    expect(err.reason).toBe('not-mounted');
    expect(err.message).toMatch(/failed to check boot medium .*not-a-mount on nas: nothing is mounted at/);
    expect(await readdir(plain)).toEqual([]);
    expect((await preflightError(join(work, 'missing'))).message).toMatch(/does not exist/);
  });

  it('refuses a read-only medium', async () => {
    const err = await preflightError(await medium('ro'));
    expect(err.reason).toBe('read-only');
    expect(err.message).toMatch(/mounted read-only/);
  });

  it('refuses a machine without extlinux', async () => {
    const noExtlinux = await startSshd({ without: ['extlinux'] });
    try {
      const err = await preflightError(await medium('ext2'), noExtlinux);
      expect(err.reason).toBe('no-extlinux');
      expect(err.message).toMatch(/extlinux is not installed/);
    } finally {
      await noExtlinux.stop();
    }
  });

  it('refuses an upload that does not fit, before writing anything', async () => {
    const m = await medium('tmpfs', 2048);
    const s = await connect(sshd.target());
    const state = await inspectMedium(s, m);
    const plan = planUpload(state, [await localFile('big', 3 * 1024 * 1024)]);
    expect(() => checkSpace(state, plan, 'nas')).toThrow(/not enough free space: 7.0 MiB needed \(3.0 MiB to upload \+ 4.0 MiB margin\), 2.0 MiB available/);
    expect(await readdir(m)).toEqual([]);
    s.close();
  });
});

describe('upload', () => {
  it('uploads to temporary names, verifies sha256 on the machine, renames into place', async () => {
    const m = await medium('ext2');
    const files = [await localFile('k', 100_000, 'vmlinuz'), await localFile('seg', 2_000_000)];
    const s = await connect(sshd.target());
    const plan = planUpload(await inspectMedium(s, m), files);
    expect(plan.bytes).toBe(2_100_000);
    const seen: number[] = [];
    expect(await uploadFiles(s, m, plan, { onProgress: (p) => seen.push(p.sent) })).toBe(2_100_000);
    expect(seen.at(-1)).toBe(2_100_000);
    for (const f of files) expect(createHash('sha256').update(await readFile(join(m, f.path))).digest('hex')).toBe(f.sha256);
    expect((await readdir(join(m, 'boot/ramboot'))).sort()).toEqual(files.map((f) => f.path.split('/').pop()).sort());
    // Nothing is missing any more.
    expect(planUpload(await inspectMedium(s, m), files).bytes).toBe(0);
    s.close();
  });

  it('never names a file whose sha256 does not match', async () => {
    const m = await medium('ext2');
    const f = await localFile('liar', 1000);
    const s = await connect(sshd.target());
    const wrong = { ...f, sha256: '0'.repeat(64), path: contentPath('0'.repeat(64), 'cpio.zst') };
    await expect(uploadFiles(s, m, planUpload(await inspectMedium(s, m), [wrong]))).rejects.toThrow(/sha256 on the machine is [0-9a-f]{64}, expected 0{64}/);
    expect(await readdir(join(m, 'boot/ramboot'))).toEqual([]);
    s.close();
  });

  it('after a cut upload: no content file from the cut one, and the next run sends only what is missing', async () => {
    const m = await medium('ext2');
    const small = await localFile('small', 50_000);
    const big = await localFile('big', 8 * 1024 * 1024);
    const s = await connect(sshd.target());
    const plan = planUpload(await inspectMedium(s, m), [small, big]);
    const cut = await uploadFiles(s, m, plan, {
      onProgress: (p) => {
        if (p.file === big.path && p.sent > small.bytes + 2 * 1024 * 1024) s.destroy();
      },
    }).catch((e: unknown) => e);
    expect(String(cut)).toMatch(/connection was lost|connection is closed/);
    const names = await readdir(join(m, 'boot/ramboot'));
    expect(names).toContain(small.path.split('/').pop());
    expect(names).not.toContain(big.path.split('/').pop());

    const s2 = await connect(sshd.target());
    const state = await inspectMedium(s2, m);
    const again = planUpload(state, [small, big]);
    expect(again.missing.map((f) => f.path)).toEqual([big.path]);
    expect(again.unverified.map((f) => f.path)).toEqual([small.path]);
    // The cut upload's part file is the start of the big one: only the rest is sent.
    const had = (await stat(join(m, `${big.path}.part`))).size;
    expect(had).toBeGreaterThan(0);
    expect(again.resume.get(big.path)).toBe(had);
    expect(again.stale).toEqual([]);
    expect(again.bytes).toBe(big.bytes - had);
    expect(await uploadFiles(s2, m, again)).toBe(big.bytes - had);
    expect((await readdir(join(m, 'boot/ramboot'))).sort()).toEqual([small, big].map((f) => f.path.split('/').pop()).sort());
    expect(createHash('sha256').update(await readFile(join(m, big.path))).digest('hex')).toBe(big.sha256);
    s2.close();
  });

  it('sends the whole file again when a part file turns out not to be its start', async () => {
    const m = await medium('ext2');
    const f = await localFile('seg', 300_000);
    await mkdir(join(m, 'boot/ramboot'), { recursive: true });
    await writeFile(join(m, `${f.path}.part`), randomBytes(100_000));
    const s = await connect(sshd.target());
    const plan = planUpload(await inspectMedium(s, m), [f]);
    expect(plan.bytes).toBe(200_000);
    expect(await uploadFiles(s, m, plan)).toBe(200_000 + 300_000);
    expect(createHash('sha256').update(await readFile(join(m, f.path))).digest('hex')).toBe(f.sha256);
    expect(await readdir(join(m, 'boot/ramboot'))).toEqual([f.path.split('/').pop()]);
    s.close();
  });

  it('deletes a part file longer than its file', async () => {
    const m = await medium('ext2');
    const f = await localFile('seg', 1000);
    await mkdir(join(m, 'boot/ramboot'), { recursive: true });
    await writeFile(join(m, `${f.path}.part`), randomBytes(2000));
    const s = await connect(sshd.target());
    const plan = planUpload(await inspectMedium(s, m), [f]);
    expect(plan.stale).toEqual([`${f.path}.part`]);
    expect(await uploadFiles(s, m, plan)).toBe(1000);
    expect(await readdir(join(m, 'boot/ramboot'))).toEqual([f.path.split('/').pop()]);
    s.close();
  });

  it('makes a changed segment on the machine from the one a label names, sending only what changed', async () => {
    const m = await medium('ext2', 128);
    const [old, changed] = await segmentPair();
    const s = await connect(sshd.target());
    await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [old]));
    const slots = await labelled(s, m, old);
    const warnings: string[] = [];
    const bases = basesFor(slots, { initrds: [changed.path] }, new Map([[old.sha256, old.local]]));
    const sent = await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [changed]), { bases, onWarn: (w) => warnings.push(w) });
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(changed.bytes * 0.1);
    expect(warnings).toEqual([]);
    expect(createHash('sha256').update(await readFile(join(m, changed.path))).digest('hex')).toBe(changed.sha256);
    expect((await readdir(join(m, 'boot/ramboot'))).sort()).toEqual([old, changed].map((f) => f.path.split('/').pop()).sort());
    s.close();
  });

  it('refuses a file made from a damaged basis before any label names it, and sends it whole', async () => {
    const m = await medium('ext2', 128);
    const [old, changed] = await segmentPair();
    const s = await connect(sshd.target());
    await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [old]));
    // A stick that lost bytes of the file a label names: its name still says the old hash.
    const onMedium = join(m, old.path);
    const bytes = await readFile(onMedium);
    bytes.fill(0, 100_000, 140_000);
    await writeFile(onMedium, bytes);
    const slots = await labelled(s, m, old);
    const warnings: string[] = [];
    const bases = basesFor(slots, { initrds: [changed.path] }, new Map([[old.sha256, old.local]]));
    const sent = await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [changed]), { bases, onWarn: (w) => warnings.push(w) });
    expect(warnings).toEqual([
      expect.stringMatching(new RegExp(`^failed to make ${changed.path} on \\S+ from ${old.path}: the result has sha256 [0-9a-f]{64}, not ${changed.sha256}: .*\\(a failing stick\\); sending it whole$`)),
    ]);
    expect(sent).toBeGreaterThan(changed.bytes);
    expect(createHash('sha256').update(await readFile(join(m, changed.path))).digest('hex')).toBe(changed.sha256);
    expect((await readdir(join(m, 'boot/ramboot'))).filter((n) => /\.(part|lit)$/.test(n))).toEqual([]);
    s.close();
  });

  it('a delta whose literal upload was cut resumes where the literal on the medium ends; one that is not its start is sent again', async () => {
    const m = await medium('ext2', 128);
    const [old, changed] = await segmentPair(1_000_000);
    const literal = makeDelta(await readFile(old.local), await readFile(changed.local)).literal;
    const s = await connect(sshd.target());
    await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [old]));
    const bases = basesFor(await labelled(s, m, old), { initrds: [changed.path] }, new Map([[old.sha256, old.local]]));
    // What a cut upload leaves: the start of the literal.
    await writeFile(join(m, `${changed.path}.lit`), literal.subarray(0, 300_000));
    const plan = planUpload(await inspectMedium(s, m), [changed]);
    expect(plan.literals.get(changed.path)).toBe(300_000);
    expect(plan.stale).toEqual([]);
    expect(await uploadFiles(s, m, plan, { bases })).toBe(literal.length - 300_000);
    expect(createHash('sha256').update(await readFile(join(m, changed.path))).digest('hex')).toBe(changed.sha256);
    expect((await readdir(join(m, 'boot/ramboot'))).filter((n) => /\.(part|lit)$/.test(n))).toEqual([]);

    // A literal of another delta under the same name: the rest does not make it this one.
    await rm(join(m, changed.path));
    await writeFile(join(m, `${changed.path}.lit`), randomBytes(300_000));
    expect(await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [changed]), { bases })).toBe(literal.length - 300_000 + literal.length);
    expect(createHash('sha256').update(await readFile(join(m, changed.path))).digest('hex')).toBe(changed.sha256);
    s.close();
  });

  it('a deploy killed while the machine makes a file: the next run makes it again into a new inode while the old writer still writes', async () => {
    const m = await medium('ext2', 128);
    const [old, changed] = await segmentPair();
    const literal = makeDelta(await readFile(old.local), await readFile(changed.local)).literal;
    const s = await connect(sshd.target());
    await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [old]));
    const bases = basesFor(await labelled(s, m, old), { initrds: [changed.path] }, new Map([[old.sha256, old.local]]));
    // What the killed run left: its whole literal, and a part that its `dd`, still running, writes into.
    await writeFile(join(m, `${changed.path}.lit`), literal);
    const part = join(m, `${changed.path}.part`);
    await writeFile(part, (await readFile(changed.local)).subarray(0, changed.bytes - 1000));
    const writer = leftoverWriter(part);
    try {
      const plan = planUpload(await inspectMedium(s, m), [changed]);
      expect(plan.resume.has(changed.path)).toBe(false);
      const warnings: string[] = [];
      expect(await uploadFiles(s, m, plan, { bases, onWarn: (w) => warnings.push(w) })).toBe(0);
      expect(warnings).toEqual([]);
      expect(createHash('sha256').update(await readFile(join(m, changed.path))).digest('hex')).toBe(changed.sha256);
    } finally {
      await writer.stop();
    }
    s.close();
  });

  it('a cut upload whose part a leftover writer still writes into: resuming fails the hash, and the file is sent again into a new inode', async () => {
    const m = await medium('ext2');
    const f = await localFile('seg', 300_000);
    await mkdir(join(m, 'boot/ramboot'), { recursive: true });
    const part = join(m, `${f.path}.part`);
    await writeFile(part, (await readFile(f.local)).subarray(0, 100_000));
    const writer = leftoverWriter(part);
    const s = await connect(sshd.target());
    try {
      const plan = planUpload(await inspectMedium(s, m), [f]);
      expect(plan.resume.get(f.path)).toBeGreaterThan(0);
      await uploadFiles(s, m, plan);
      expect(createHash('sha256').update(await readFile(join(m, f.path))).digest('hex')).toBe(f.sha256);
    } finally {
      await writer.stop();
    }
    s.close();
  });

  it('never sends the secrets segment as a delta', async () => {
    const [old, changed] = await segmentPair();
    const m = await medium('ext2', 128);
    const s = await connect(sshd.target());
    await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [old]));
    const slots = await labelled(s, m, old);
    const secrets = { ...changed, segment: 'secrets' };
    const bases = basesFor(slots, { initrds: [secrets.path] }, new Map([[old.sha256, old.local]]));
    expect(await uploadFiles(s, m, planUpload(await inspectMedium(s, m), [secrets]), { bases })).toBe(changed.bytes);
    s.close();
  });

  it('re-uploads a leftover file that is corrupt', async () => {
    const m = await medium('ext2');
    const f = await localFile('seg', 10_000);
    await mkdir(join(m, 'boot/ramboot'), { recursive: true });
    await writeFile(join(m, f.path), 'garbage');
    const s = await connect(sshd.target());
    const plan = planUpload(await inspectMedium(s, m), [f]);
    expect(plan.missing).toEqual([]);
    expect(await uploadFiles(s, m, plan)).toBe(f.bytes);
    expect(createHash('sha256').update(await readFile(join(m, f.path))).digest('hex')).toBe(f.sha256);
    s.close();
  });
});

describe('syslinux.cfg and the files it names', () => {
  const slots = (id: string, kernel: string, initrd: string): SlotTable => ({ lts: { buildId: id, kernel, initrds: [initrd], append: 'quiet' } });

  it('replaces syslinux.cfg with a rename, leaving no temporary file', async () => {
    const m = await medium('ext2');
    await mkdir(join(m, 'boot/syslinux'), { recursive: true });
    const s = await connect(sshd.target());
    await writeCfg(s, m, slots('one', 'boot/ramboot/a.vmlinuz', 'boot/ramboot/b.cpio.zst'));
    const before = await stat(join(m, CFG_PATH));
    await writeCfg(s, m, slots('two', 'boot/ramboot/c.vmlinuz', 'boot/ramboot/d.cpio.zst'));
    const after = await stat(join(m, CFG_PATH));
    // A new inode: the file was replaced whole, never rewritten in place.
    expect(after.ino).not.toBe(before.ino);
    expect(parseSyslinuxCfg(await readFile(join(m, CFG_PATH), 'utf8')).lts?.buildId).toBe('two');
    expect(await readdir(join(m, 'boot/syslinux'))).toEqual(['syslinux.cfg']);
    s.close();
  });

  it('deletes exactly the files no label names', async () => {
    const m = await medium('ext2');
    await mkdir(join(m, 'boot/ramboot'), { recursive: true });
    for (const n of ['a.vmlinuz', 'b.cpio.zst', 'c.vmlinuz', 'd.cpio.zst.part']) await writeFile(join(m, 'boot/ramboot', n), n);
    const s = await connect(sshd.target());
    const removed = await removeUnreferenced(s, m, slots('one', 'boot/ramboot/a.vmlinuz', 'boot/ramboot/b.cpio.zst'));
    expect(removed.sort()).toEqual(['boot/ramboot/c.vmlinuz', 'boot/ramboot/d.cpio.zst.part']);
    expect((await readdir(join(m, 'boot/ramboot'))).sort()).toEqual(['a.vmlinuz', 'b.cpio.zst']);
    s.close();
  });

  it('arms and clears the boot-once entry with the real extlinux', async () => {
    const m = await medium('ext2');
    await mkdir(join(m, 'boot/syslinux'), { recursive: true });
    await execa('extlinux', ['--install', join(m, 'boot/syslinux')]);
    // The ADV (last KiB of ldlinux.sys, two copies) holds the once-entry as tag 1, length, label.
    const onceNew = async () => (await readFile(join(m, 'boot/syslinux/ldlinux.sys'))).subarray(-1024).includes(Buffer.from('\x01\x03new', 'latin1'));
    const s = await connect(sshd.target());
    await armOnce(s, m, 'new');
    expect(await onceNew()).toBe(true);
    await clearOnce(s, m);
    expect(await onceNew()).toBe(false);
    s.close();
  });
});

describe('the UEFI layout: boot entries on an ESP, against a local sshd standing in for the NAS', () => {
  const entry = (buildId: string) => ({ buildId, kernel: `boot/ramboot/${buildId}.vmlinuz`, initrds: [`boot/ramboot/${buildId}.cpio.zst`], append: 'console=ttyS0' });
  const entriesOf = async (m: string) => (await readdir(join(m, 'loader/entries'))).sort();

  it('refuses a uefi configuration on a machine that booted with BIOS, before anything is written', async () => {
    const m = await medium('tmpfs');
    const s = await connect(sshd.target());
    try {
      const err = (await inspectMedium(s, m, 'uefi').catch((e: unknown) => e)) as PreflightError;
      expect(err).toBeInstanceOf(PreflightError);
      expect(err.reason).toBe('firmware-mismatch');
      expect(err.message).toMatch(/ramboot.yaml says boot.firmware: uefi, but .* booted with BIOS \(no \/sys\/firmware\/efi\): set boot.firmware: bios .*; nothing was written/);
      expect(await readdir(m)).toEqual([]);
    } finally {
      s.close();
    }
  });

  it('writes the candidate counted for one try, reads the slots back, and promotes by rewriting the entries', async () => {
    const m = await medium('tmpfs');
    const s = await connect(sshd.target());
    try {
      await writeCfg(s, m, { lts: entry('a') }, 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf']);
      await writeCfg(s, m, { lts: entry('a'), new: entry('b') }, 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf', 'new+1-0.conf']);
      expect(await readFile(join(m, 'loader/entries/new+1-0.conf'), 'utf8')).toMatch(/^sort-key ramboot-1-new$[\s\S]*^linux \/boot\/ramboot\/b.vmlinuz$\ninitrd \/boot\/ramboot\/b.cpio.zst$\noptions panic=10 ramboot.slot=new ramboot.build=b console=ttyS0$/m);
      expect(await readSlots(s, m)).toEqual({ lts: entry('a'), new: entry('b') });
      // systemd-boot counted the try down before booting it; the agent's confirm blessed it.
      await execa('mv', [join(m, 'loader/entries/new+1-0.conf'), join(m, 'loader/entries/new.conf')]);
      await writeCfg(s, m, { lts: entry('b'), old: entry('a') }, 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf', 'old.conf']);
      expect(await readSlots(s, m)).toEqual({ lts: entry('b'), old: entry('a') });
      // A failed trial's entry (no tries left) is removed when the candidate leaves.
      await writeFile(join(m, 'loader/entries/new+0-1.conf'), (await readFile(join(m, 'loader/entries/lts.conf'), 'utf8')).replace(/ramboot.slot=lts ramboot.build=b/, 'ramboot.slot=new ramboot.build=c'));
      await writeCfg(s, m, { lts: entry('b'), old: entry('a') }, 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf', 'old.conf']);
    } finally {
      s.close();
    }
  });

  it('arming needs no extlinux on UEFI: the counted entry is the arm, and arming again gives a tried entry its one try back', async () => {
    const m = await medium('tmpfs');
    const s = await connect(sshd.target());
    try {
      await writeCfg(s, m, { lts: entry('a'), new: entry('b') }, 'uefi');
      await armOnce(s, m, 'new', 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf', 'new+1-0.conf']);
      // A power cut booted the trial: systemd-boot counted its try down. The resumed deploy arms it again.
      await execa('mv', [join(m, 'loader/entries/new+1-0.conf'), join(m, 'loader/entries/new+0-1.conf')]);
      await armOnce(s, m, 'new', 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf', 'new+1-0.conf']);
      await clearOnce(s, m, 'uefi');
      expect(await entriesOf(m)).toEqual(['lts.conf', 'new+1-0.conf']);
    } finally {
      s.close();
    }
  });
});
