import { describe, expect, it } from 'vitest';
import { exposure, parseFstabEntry } from '../../image/medium.js';

// Whether an image's fstab keeps the boot medium's files (the secrets segment among them)
// readable by root alone.

describe('the boot medium\'s fstab entry', () => {
  it('reads the entry of the mount point: UUID, type, options and the line itself', () => {
    const text = '# the stick\nUUID=52a0-0b07  /media/usb  vfat  rw,noatime,fmask=0177,dmask=0077  0 0\nproc /proc proc defaults 0 0\n';
    expect(parseFstabEntry(text, '/media/usb')).toEqual({
      mountpoint: '/media/usb',
      uuid: '52A0-0B07',
      type: 'vfat',
      options: 'rw,noatime,fmask=0177,dmask=0077',
      line: 'UUID=52a0-0b07  /media/usb  vfat  rw,noatime,fmask=0177,dmask=0077  0 0',
    });
    expect(parseFstabEntry(text, '/boot')).toEqual({ mountpoint: '/boot' });
  });

  it.each([
    ['rw,fmask=0177,dmask=0077', undefined],
    ['rw,umask=0077', undefined],
    ['rw,fmask=0133,dmask=0022', 'fmask=0133 lets others read its files and dmask=0022 lets others list its directories: mount it with fmask=0177,dmask=0077'],
    ['rw', 'fmask=0022 lets others read its files and dmask=0022 lets others list its directories: mount it with fmask=0177,dmask=0077'],
    ['rw,fmask=0177', 'dmask=0022 lets others list its directories: mount it with fmask=0177,dmask=0077'],
  ])('vfat with %s', (options, expected) => {
    expect(exposure({ type: 'vfat', options })).toBe(expected);
  });

  it('a file system whose files keep their own modes is private: deploy writes the secrets 0600', () => {
    expect(exposure({ type: 'ext4', options: 'defaults' })).toBeUndefined();
  });
});
