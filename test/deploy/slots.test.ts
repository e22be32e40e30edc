import { describe, expect, it } from 'vitest';
import {
  MANAGED_HEADER,
  parseLabels,
  parseSyslinuxCfg,
  promoted,
  referencedFiles,
  renderSyslinuxCfg,
  withCandidate,
  withoutCandidate,
  type SlotEntry,
  type SlotTable,
} from '../../deploy/slots.js';

const entry = (id: string, shared = 'base'): SlotEntry => ({
  buildId: id,
  kernel: `boot/ramboot/k${id}.vmlinuz`,
  initrds: [`boot/ramboot/${shared}.cpio.zst`, `boot/ramboot/o${id}.cpio.zst`],
  append: 'console=ttyS0 quiet',
});
const A = entry('a');
const B = entry('b');
const C = entry('c');

describe('syslinux.cfg', () => {
  it('round-trips every combination of slots', () => {
    const tables: SlotTable[] = [{ lts: A }, { lts: A, old: B }, { lts: A, old: B, new: C }, { lts: A, new: C }];
    for (const t of tables) {
      const text = renderSyslinuxCfg(t);
      expect(text.startsWith(MANAGED_HEADER)).toBe(true);
      expect(parseSyslinuxCfg(text)).toEqual(t);
    }
  });

  it('puts the slot and build on the kernel command line and boots lts by default', () => {
    const text = renderSyslinuxCfg({ lts: A, new: { ...C, append: '' } });
    expect(text).toContain('DEFAULT lts');
    expect(text).toContain('APPEND panic=10 ramboot.slot=lts ramboot.build=a console=ttyS0 quiet');
    expect(text).toContain('APPEND panic=10 ramboot.slot=new ramboot.build=c\n');
    expect(text).toContain('INITRD /boot/ramboot/base.cpio.zst,/boot/ramboot/oc.cpio.zst');
  });

  it('ignores labels it did not write', () => {
    expect(parseSyslinuxCfg('DEFAULT linux\nLABEL linux\n  KERNEL /vmlinuz\n  APPEND root=/dev/sda1\n')).toEqual({});
  });
});

describe('slot transitions', () => {
  // [name, before, after, expected]
  const table: [string, SlotTable, (t: SlotTable) => SlotTable, SlotTable][] = [
    ['candidate goes to new', { lts: A, old: B }, (t) => withCandidate(t, C), { lts: A, old: B, new: C }],
    ['candidate replaces a stale new', { lts: A, new: B }, (t) => withCandidate(t, C), { lts: A, old: undefined, new: C }],
    ['promotion: lts=candidate, old=former lts, new dropped', { lts: A, old: B, new: C }, (t) => promoted(t, C), { lts: C, old: A }],
    ['first promotion after adoption', { lts: A, new: C }, (t) => promoted(t, C), { lts: C, old: A }],
    ['promotion is idempotent (resumed after the cfg was written)', { lts: C, old: A }, (t) => promoted(t, C), { lts: C, old: A }],
    ['rollback drops the candidate only', { lts: A, old: B, new: C }, withoutCandidate, { lts: A, old: B }],
  ];
  it.each(table)('%s', (_name, before, change, expected) => {
    expect(change(before)).toEqual(expected);
  });

  it('keeps files shared with a remaining label after promotion', () => {
    const after = promoted({ lts: A, old: B, new: C }, C);
    const refs = referencedFiles(after);
    expect(refs.has('boot/ramboot/base.cpio.zst')).toBe(true);
    expect(refs.has(B.kernel)).toBe(false);
    expect(refs.has(C.kernel) && refs.has(A.kernel)).toBe(true);
  });
});

describe('parseLabels (configs ramboot did not write)', () => {
  it('reads the reference NAS layout, relative paths and initrd= on APPEND', () => {
    const cfg = [
      'SERIAL 0 115200',
      'DEFAULT lts',
      'LABEL lts',
      '  LINUX /boot/vmlinuz-lts',
      '  INITRD /boot/initramfs-lts',
      '  APPEND modules=loop,sd-mod,usb-storage quiet',
      'LABEL old',
      '  KERNEL vmlinuz-old',
      '  APPEND initrd=initramfs-old quiet',
    ].join('\n');
    expect(parseLabels(cfg)).toEqual({
      default: 'lts',
      labels: [
        { name: 'lts', kernel: 'boot/vmlinuz-lts', initrds: ['boot/initramfs-lts'], append: 'modules=loop,sd-mod,usb-storage quiet' },
        { name: 'old', kernel: 'vmlinuz-old', initrds: ['initramfs-old'], append: 'quiet' },
      ],
    });
  });
});
