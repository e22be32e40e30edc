import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packTree } from '../../builder/segment.js';
import { readSegmentFiles } from '../../image/cpio-read.js';
import { compareAccounts } from '../../plan/accounts.js';
import { fstabProblem } from '../../plan/check.js';
import { unifiedDiff } from '../../plan/diff.js';
import { comparePackages, compareVersions, listedNames, parsePackageDb } from '../../plan/packages.js';
import { compareSettings } from '../../plan/settings.js';
import type { Manifest } from '../../image/manifest.js';
import { unpackSegment } from '../helpers/segment.js';

// The pieces a plan is made of, each against an oracle where there is one: GNU diff for
// the diffs, real archives written by the builder for the segment reader.

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ramboot-plan-parts-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** GNU diff -u of two texts, without its timestamped header lines. */
function gnuDiff(a: string, b: string): string {
  writeFileSync(join(work, 'a'), a);
  writeFileSync(join(work, 'b'), b);
  const r = spawnSync('diff', ['-u', join(work, 'a'), join(work, 'b')], { encoding: 'utf8' });
  return r.stdout.split('\n').slice(2).join('\n').trimEnd();
}

describe('unified diffs', () => {
  const cases: [string, string, string][] = [
    ['one line changed in the middle', 'a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n', 'a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n'],
    ['two changes far apart make two hunks', Array.from({ length: 30 }, (_, i) => `l${i}`).join('\n') + '\n', Array.from({ length: 30 }, (_, i) => (i === 2 || i === 25 ? `L${i}` : `l${i}`)).join('\n') + '\n'],
    ['lines added at the end', 'x\ny\n', 'x\ny\nz\nw\n'],
    ['lines removed at the start', 'p\nq\nr\ns\n', 'r\ns\n'],
    ['no newline at the end of the new text', 'same\nold\n', 'same\nnew'],
    ['everything different', 'a\nb\nc\n', 'x\ny\n'],
  ];
  for (const [name, a, b] of cases) {
    it(`matches GNU diff -u: ${name}`, () => {
      const d = unifiedDiff('etc/x', a, b)!;
      expect(d.text.split('\n').slice(0, 2)).toEqual(['--- a/etc/x', '+++ b/etc/x']);
      expect(d.text.split('\n').slice(2).join('\n')).toBe(gnuDiff(a, b));
    });
  }

  it('diffs an added file against /dev/null', () => {
    const d = unifiedDiff('etc/new', undefined, 'one\ntwo\n')!;
    expect(d.text).toBe('--- /dev/null\n+++ b/etc/new\n@@ -0,0 +1,2 @@\n+one\n+two');
    expect(d.added).toBe(2);
  });
});

describe('users and groups', () => {
  const before = {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/ash\nalice:x:1000:1000:Alice:/home/alice:/bin/ash\n',
    'etc/shadow': 'root:*:19000:0:::::\nalice:$6$saltone$FIRSTHASHvalue:19000:0:99999:7:::\n',
    'etc/group': 'root:x:0:root\nwheel:x:10:root\nalice:x:1000:\n',
  };

  it('says "password changed" for a new hash and never shows either hash', () => {
    const after = { ...before, 'etc/shadow': 'root:*:19000:0:::::\nalice:$6$salttwo$SECONDHASHvalue:19999:0:99999:7:::\n' };
    const changes = compareAccounts(before, after);
    expect(changes).toEqual([{ kind: 'user', name: 'alice', change: 'changed', details: ['password changed'] }]);
    expect(JSON.stringify(changes)).not.toMatch(/HASHvalue|salt/);
  });

  it('ignores the day of the last password change, which is the day the image was built', () => {
    expect(compareAccounts(before, { ...before, 'etc/shadow': before['etc/shadow'].replace(/19000:0:99999/, '20001:0:99999') })).toEqual([]);
  });

  it('reports a locked password, a new shell and a new group membership of a user', () => {
    const after = {
      'etc/passwd': before['etc/passwd'].replace('alice:/bin/ash', 'alice:/bin/sh'),
      'etc/shadow': before['etc/shadow'].replace('$6$saltone$FIRSTHASHvalue', '!$6$saltone$FIRSTHASHvalue'),
      'etc/group': before['etc/group'].replace('wheel:x:10:root', 'wheel:x:10:root,alice'),
    };
    const [user, group] = compareAccounts(before, after);
    expect(user).toEqual({ kind: 'user', name: 'alice', change: 'changed', details: ['shell /bin/ash → /bin/sh', 'password: set → locked', 'groups: +wheel'] });
    expect(group).toEqual({ kind: 'group', name: 'wheel', change: 'changed', details: ['members: +alice'] });
  });

  it('describes an added user with its group and a password field left empty', () => {
    const after = { ...before, 'etc/passwd': `${before['etc/passwd']}bob::1001:1001::/home/bob:/bin/sh\n`, 'etc/group': `${before['etc/group']}bob:x:1001:\n` };
    const changes = compareAccounts(before, after);
    expect(changes[0]).toEqual({ kind: 'user', name: 'bob', change: 'added', details: ['uid 1001', 'group 1001 (bob)', 'home /home/bob', 'shell /bin/sh', 'password none (no password needed)'] });
    expect(changes[1]).toEqual({ kind: 'group', name: 'bob', change: 'added', details: ['gid 1001', 'no members'] });
  });
});

describe('package databases', () => {
  it('reads installed packages from dpkg\'s status, leaving out removed ones', () => {
    const status = [
      'Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2p1-2+deb12u3\n',
      'Package: old-thing\nStatus: deinstall ok config-files\nVersion: 1.0\n',
      'Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b7\n',
    ].join('\n');
    expect(parsePackageDb('debian', status)).toEqual([
      { name: 'bash', version: '5.2.15-2+b7' },
      { name: 'openssh-server', version: '1:9.2p1-2+deb12u3' },
    ]);
  });

  it('reads apk\'s installed database', () => {
    expect(parsePackageDb('alpine', 'C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\n\nP:busybox\nV:1.36.1-r29\n')).toEqual([
      { name: 'busybox', version: '1.36.1-r29' },
      { name: 'musl', version: '1.2.5-r0' },
    ]);
  });

  it('orders versions by their numbers, epochs first', () => {
    expect(compareVersions('1.10', '1.9')).toBeGreaterThan(0);
    expect(compareVersions('1.2.3-r1', '1.2.3-r0')).toBeGreaterThan(0);
    expect(compareVersions('1:0.9', '2.0')).toBeGreaterThan(0);
    expect(compareVersions('2.0', '2.0')).toBe(0);
  });

  it('marks listed packages apart from dependencies, and a downgrade as one', () => {
    const c = comparePackages(
      [{ name: 'a', version: '2.0' }, { name: 'b', version: '1.0' }],
      [{ name: 'a', version: '1.5' }, { name: 'c', version: '3.0' }],
      listedNames(['a', 'b']),
      listedNames(['a>=1', 'c']),
    );
    expect(c).toEqual({
      added: [{ name: 'c', version: '3.0', listed: true }],
      removed: [{ name: 'b', version: '1.0', listed: true }],
      upgraded: [{ name: 'a', from: '2.0', to: '1.5', listed: true, downgrade: true }],
    });
  });
});

describe('the boot medium\'s fstab line', () => {
  it('accepts vfat mounted with fmask=0177,dmask=0077 or stricter', () => {
    expect(fstabProblem('UUID=52A0-0B07 /media/usb vfat rw,noatime,fmask=0177,dmask=0077 0 0\n', '/media/usb')).toBeUndefined();
    expect(fstabProblem('LABEL=X /media/usb/ vfat umask=0777 0 0\n', '/media/usb')).toBeUndefined();
  });

  it('refuses masks that let others read the files, naming the line and the fix', () => {
    const p = fstabProblem('# the stick\nUUID=52A0-0B07  /media/usb  vfat  rw,noatime,fmask=0133,dmask=0022  0 0\n', '/media/usb');
    expect(p).toBe('root/etc/fstab, line 2: fmask=0133 lets others read its files and dmask=0022 lets others list its directories: mount it with fmask=0177,dmask=0077');
    expect(fstabProblem('UUID=1 /media/usb vfat fmask=0177,dmask=0077 0 0', '/media/usb')).toBeUndefined();
    expect(fstabProblem('UUID=1 /media/usb vfat fmask=0077,dmask=0077 0 0', '/media/usb')).toBeUndefined();
    expect(fstabProblem('UUID=1 /media/usb vfat rw 0 0', '/media/usb')).toContain('fmask=0022');
    // Options apply in order: a later umask undoes the masks before it.
    expect(fstabProblem('UUID=1 /media/usb vfat fmask=0177,dmask=0077,umask=0022 0 0', '/media/usb')).toContain('fmask=0022');
  });

  it('accepts a medium whose files keep their own modes (ext4: deploy writes the secrets 0600), and refuses a missing line', () => {
    expect(fstabProblem('/dev/sda1 /media/usb ext4 defaults 0 0', '/media/usb')).toBeUndefined();
    expect(fstabProblem('/dev/sda1 /boot vfat defaults 0 0', '/media/usb')).toMatch(/^root\/etc\/fstab has no line for the boot medium \(boot.medium \/media\/usb\)/);
    expect(fstabProblem(undefined, '/media/usb')).toMatch(/^root\/etc\/fstab is missing/);
  });
});

describe('reading files back out of a segment', () => {
  let segment: string;
  beforeAll(async () => {
    const root = join(work, 'tree');
    mkdirSync(join(root, 'etc/deep'), { recursive: true });
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    writeFileSync(join(root, 'etc/deep/big'), Buffer.alloc(300_000, 7));
    writeFileSync(join(root, 'etc/linked-a'), 'one body, two names\n');
    linkSync(join(root, 'etc/linked-a'), join(root, 'etc/linked-b'));
    symlinkSync('passwd', join(root, 'etc/link'));
    writeFileSync(join(root, 'etc/secret'), 'mode 600\n');
    chmodSync(join(root, 'etc/secret'), 0o600);
    segment = join(work, 'seg.cpio.zst');
    await packTree(root, segment);
  });

  it('gives the contents of the wanted files, hardlinked ones too, and nothing else', async () => {
    const got = await readSegmentFiles(segment, ['etc/passwd', 'etc/linked-b', 'etc/secret', 'etc/link', 'etc/missing'], 1 << 20);
    expect([...got.keys()].sort()).toEqual(['etc/linked-b', 'etc/passwd', 'etc/secret']);
    expect(got.get('etc/linked-b')!.toString()).toBe('one body, two names\n');
    expect(got.get('etc/passwd')!.toString()).toBe('root:x:0:0::/root:/bin/sh\n');
  });

  it('leaves out files larger than asked for', async () => {
    const got = await readSegmentFiles(segment, ['etc/deep/big', 'etc/passwd'], 100_000);
    expect([...got.keys()]).toEqual(['etc/passwd']);
  });

  it('says the segment is damaged when a later piece is, though the pieces before it read whole', async () => {
    const dir = join(work, 'many');
    for (let i = 0; i < 40; i++) {
      mkdirSync(join(dir, `d${i}`), { recursive: true });
      writeFileSync(join(dir, `d${i}/f`), randomBytes(32 * 1024));
    }
    const seg = join(work, 'many.cpio.zst');
    await packTree(dir, seg);
    // The last piece's frame no longer starts with zstd's magic: zstd stops there with an
    // error, after every piece before it came out whole.
    const bytes = readFileSync(seg);
    bytes.writeUInt32LE(0, bytes.lastIndexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])));
    const bad = join(work, 'many-bad.cpio.zst');
    writeFileSync(bad, bytes);
    expect((await readSegmentFiles(bad, ['d0/f'], 1 << 20)).get('d0/f')!.equals(readFileSync(join(dir, 'd0/f')))).toBe(true);
    await expect(readSegmentFiles(bad, ['d0/f', 'not/there'], 1 << 20)).rejects.toThrow(new RegExp(`failed to read ${bad}: [\\s\\S]*build the image again`));
  });

  it('says the segment is damaged, naming it, when it is not a zstd archive', async () => {
    const bad = join(work, 'bad.cpio.zst');
    writeFileSync(bad, 'not zstd at all');
    await expect(readSegmentFiles(bad, ['etc/passwd'], 1024)).rejects.toThrow(new RegExp(`failed to read ${bad}: .*build the image again`));
  });

  it('reads every regular file as GNU cpio unpacks it', async () => {
    const out = join(work, 'unpacked');
    mkdirSync(out);
    unpackSegment(segment, out);
    const files = execFileSync('find', ['.', '-type', 'f'], { cwd: out, encoding: 'utf8' }).trim().split('\n').map((p) => p.slice(2));
    const got = await readSegmentFiles(segment, files, 1 << 20);
    expect([...got.keys()].sort()).toEqual(files.sort());
    for (const f of files) expect(got.get(f)!.equals(readFileSync(join(out, f))), f).toBe(true);
  });
});

describe('the plan\'s boot settings know both firmwares', () => {
  const manifest = (boot: Record<string, unknown>) =>
    ({ settings: { host: { name: 'nas' }, boot: { medium: '/media/usb', kernel: 'vmlinuz*', append: '', ...boot }, trial: {}, health: { checks: [] } } }) as unknown as Manifest;

  it('shows a move from BIOS to UEFI, and none for an image built before boot.firmware existed', () => {
    expect(compareSettings(manifest({ firmware: 'bios' }), manifest({ firmware: 'uefi' }))).toEqual([{ key: 'boot.firmware', before: 'bios', after: 'uefi' }]);
    expect(compareSettings(manifest({}), manifest({ firmware: 'bios' }))).toEqual([]);
  });
});
