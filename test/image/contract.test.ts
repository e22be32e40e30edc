import { describe, expect, it } from 'vitest';
import { parseCmdline, renderSlotArgs, userArgs } from '../../image/cmdline.js';
import { parseRelease, renderRelease } from '../../image/release.js';

// The image's contract with deploy: what the build writes, deploy reads back the same.

describe('/etc/ramboot-release', () => {
  it('reads back what the build writes', () => {
    const text = renderRelease({ buildId: '0123abcd-89ef0123', commit: 'c0ffee'.repeat(6) + 'c0ff', time: 1_700_000_000 });
    expect(parseRelease(text)).toEqual({ build: '0123abcd-89ef0123', commit: 'c0ffee'.repeat(6) + 'c0ff', built: '2023-11-14T22:13:20.000Z' });
  });

  it('says no commit for a build of a directory', () => {
    expect(parseRelease(renderRelease({ buildId: 'dir-1', time: 0 })).commit).toBeUndefined();
  });

  it.each([
    ['BUILD="quoted"\n# comment\n\nbuild = spaced \n', { build: 'spaced', commit: undefined, built: undefined }],
    ['', { build: undefined, commit: undefined, built: undefined }],
  ])('tolerates hand-edited files %#', (text, expected) => {
    expect(parseRelease(text)).toEqual(expected);
  });
});

describe('the ramboot.* kernel arguments', () => {
  it('reads back the slot and build a label names, among the other arguments', () => {
    const cmdline = `BOOT_IMAGE=/boot/x ${renderSlotArgs('new', 'b1-2')} console=ttyS0 quiet\n`;
    expect(parseCmdline(cmdline)).toEqual({ slot: 'new', build: 'b1-2' });
  });

  it('finds nothing on a command line ramboot did not write', () => {
    expect(parseCmdline('root=/dev/sda1 quiet xramboot.slot=new\n')).toEqual({ slot: undefined, build: undefined });
  });

  it('leaves only the user\'s arguments when the slot arguments are taken away', () => {
    expect(userArgs(`${renderSlotArgs('lts', 'abc')} console=ttyS0 net.ifnames=0`)).toBe('console=ttyS0 net.ifnames=0');
    expect(userArgs('quiet ramboot.debug=1')).toBe('quiet ramboot.debug=1');
  });
});
