import { parseCmdline, renderSlotArgs, userArgs } from '../image/cmdline.js';
import { SLOTS, type SlotEntry, type SlotName, type SlotTable } from './slots.js';

// The UEFI layout of the three slots: Boot Loader Specification Type #1 entries on the
// EFI system partition, read by systemd-boot at the removable-media path (no NVRAM entry).
// The trial is systemd-boot's boot counting: `new+1-0.conf` has one try left; systemd-boot
// renames it to `new+0-1.conf` before it boots it, and an entry with no tries left sorts
// after every other, so the next boot takes `lts` by itself, on any firmware. The agent's
// confirm renames the entry to `new.conf` (what systemd-bless-boot does). The sort keys put
// a counted `new` first, then `lts`, then `old`.

export const ENTRIES_DIR = 'loader/entries';
export const LOADER_CONF = 'loader/loader.conf';
/** The removable-media path: firmware boots it without a boot entry in NVRAM. */
export const SD_BOOT_PATH = 'EFI/BOOT/BOOTX64.EFI';
/** Debian's systemd-boot (package systemd-boot-efi) on the controller host: what every UEFI medium gets. */
export const SD_BOOT_SOURCE = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
/** The first line of every entry ramboot writes. */
export const ENTRY_HEADER = '# Managed by ramboot';

const SORT_KEY: Record<SlotName, string> = { new: 'ramboot-1-new', lts: 'ramboot-2-lts', old: 'ramboot-3-old' };

export interface Counter {
  left: number;
  done: number;
}

/** `new+1-0.conf`, `lts.conf`: the file an entry lives in. */
export function entryFile(slot: SlotName, counter?: Counter): string {
  return `${ENTRIES_DIR}/${slot}${counter ? `+${counter.left}-${counter.done}` : ''}.conf`;
}

/** The slot and boot counter of an entry file name; undefined for files ramboot did not name. */
export function parseEntryFile(path: string): { slot: SlotName; counter?: Counter } | undefined {
  const m = /(?:^|\/)(lts|old|new)(?:\+(\d+)(?:-(\d+))?)?\.conf$/.exec(path);
  if (!m) return undefined;
  return { slot: m[1] as SlotName, counter: m[2] === undefined ? undefined : { left: Number(m[2]), done: Number(m[3] ?? 0) } };
}

export function renderEntry(slot: SlotName, e: SlotEntry): string {
  return [
    `${ENTRY_HEADER}: rewritten on every deploy. Edit ramboot.yaml instead.`,
    `title ramboot ${slot} (build ${e.buildId})`,
    `sort-key ${SORT_KEY[slot]}`,
    // An adopted unified kernel image carries its initramfs: systemd-boot starts it as an EFI program.
    ...(e.kernel.endsWith('.efi') ? [`efi /${e.kernel}`] : [`linux /${e.kernel}`, ...e.initrds.map((f) => `initrd /${f}`)]),
    `options ${[renderSlotArgs(slot, e.buildId), e.append].filter(Boolean).join(' ')}`,
    '',
  ].join('\n');
}

/** Reads an entry written by renderEntry (or any Type #1 entry: `linux`, `initrd`, `options`). */
export function parseEntry(text: string): { kernel?: string; initrds: string[]; options: string } {
  let kernel: string | undefined;
  const initrds: string[] = [];
  const options: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const sp = line.search(/\s/);
    if (sp < 0) continue;
    const [key, value] = [line.slice(0, sp), line.slice(sp).trim()];
    if (key === 'linux' || key === 'efi') kernel = value.replace(/^\//, '');
    else if (key === 'initrd') initrds.push(...value.split(/\s+/).map((f) => f.replace(/^\//, '')));
    else if (key === 'options') options.push(value);
  }
  return { kernel, initrds, options: options.join(' ') };
}

/** The slot table from the entry files and their texts, with the boot counter of each counted entry. */
export function slotsFromEntries(files: { path: string; text: string }[]): { slots: SlotTable; counters: Partial<Record<SlotName, Counter>> } {
  const slots: SlotTable = {};
  const counters: Partial<Record<SlotName, Counter>> = {};
  for (const f of files) {
    const name = parseEntryFile(f.path);
    if (!name || !f.text.startsWith(ENTRY_HEADER)) continue;
    const e = parseEntry(f.text);
    const buildId = parseCmdline(e.options).build;
    if (!e.kernel || !buildId) continue;
    slots[name.slot] = { buildId, kernel: e.kernel, initrds: e.initrds, append: userArgs(e.options) };
    if (name.counter) counters[name.slot] = name.counter;
  }
  return { slots, counters };
}

/** loader.conf: no menu (the serial console is the only screen), the sort order decides. */
export function renderLoaderConf(): string {
  return `${ENTRY_HEADER}\ntimeout 0\nconsole-mode keep\neditor no\nauto-entries no\nauto-firmware no\n`;
}

/** The entry files a slot table becomes, `new` counted (one try). */
export function entriesFor(slots: SlotTable): { path: string; text: string }[] {
  return SLOTS.filter((s) => slots[s]).map((s) => ({ path: entryFile(s, s === 'new' ? { left: 1, done: 0 } : undefined), text: renderEntry(s, slots[s]!) }));
}
