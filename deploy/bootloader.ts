import { createHash } from 'node:crypto';
import { userArgs } from '../image/cmdline.js';
import { RambootError, UsageError } from '../lib/errors.js';
import { readFileSync } from 'node:fs';
import { LOADER_CONF, SD_BOOT_PATH, SD_BOOT_SOURCE, renderLoaderConf } from './entries.js';
import { readEntrySlots } from './esp.js';
import { PreflightError, SPACE_MARGIN_BYTES, SYNC_TIMEOUT_MS, bootedFirmware, firmwareMismatch, inspectMedium, writeCfg, type Firmware, type MediumState } from './medium.js';
import { CFG_PATH, FILES_DIR, PART_SUFFIX, contentPath, parseLabels, type CfgLabel, type ContentKind, type SlotName, type SlotTable } from './slots.js';
import { connect, shq, type Session, type Target } from './ssh.js';

// `ramboot bootloader install`: makes a medium ramboot-managed. A medium laid out like
// the reference NAS (boot/vmlinuz-lts, boot/initramfs-lts, -old, -new, and a syslinux
// config naming them) is adopted: its images are copied, verified, into content files;
// then syslinux.cfg is replaced in one rename and extlinux installed. Every config on
// the medium at every moment names complete files, so it always boots.

export interface BootloaderResult {
  /** The managed slot table now on the medium. */
  slots: SlotTable;
  /** Slots adopted from the former layout (empty when the medium was already managed). */
  adopted: SlotName[];
  /** Former config files moved aside (they would shadow syslinux.cfg or are kept as a backup). */
  movedAside: string[];
  /** The firmware the machine booted with (/sys/firmware/efi). */
  firmware: Firmware;
}

/** Config files syslinux/extlinux may have booted from, in the order they are searched. */
const LEGACY_CONFIGS = ['boot/syslinux/extlinux.conf', 'boot/syslinux/syslinux.cfg', 'boot/extlinux/extlinux.conf', 'extlinux.conf', 'syslinux.cfg'];
/** extlinux reads extlinux.conf before syslinux.cfg in its directory: one left there would hide ours. */
const SHADOWING = 'boot/syslinux/extlinux.conf';
const BACKUP_SUFFIX = '.pre-ramboot';

export async function bootloaderInstall(target: Target, opts: { medium: string; append: string; firmware: Firmware }): Promise<BootloaderResult> {
  const s = await connect(target);
  try {
    // Refused before anything is written: the other boot loader would never run.
    const booted = await bootedFirmware(s);
    if (booted !== opts.firmware) {
      throw new UsageError(`failed to install the bootloader: ${firmwareMismatch(target.name, opts.firmware, booted)}`, { step: 'bootloader install', host: target.name, input: opts.medium });
    }
    if (opts.firmware === 'uefi') return { ...(await installUefi(s, opts)), firmware: booted };
    const state = await inspectMedium(s, opts.medium);
    if (state.cfg.managed) {
      await installExtlinux(s, opts.medium);
      return { slots: state.cfg.slots, adopted: [], movedAside: [], firmware: booted };
    }
    return { ...(await adopt(s, state, opts)), firmware: booted };
  } finally {
    s.close();
  }
}

interface Adoptee {
  slot: SlotName;
  kernel: string;
  initrds: string[];
  append: string;
}

async function adopt(s: Session, state: MediumState, opts: { medium: string; append: string }): Promise<Omit<BootloaderResult, 'firmware'>> {
  const host = s.target.name;
  const m = opts.medium;
  const exists = async (p: string) => (await s.exec(`test -f ${shq(`${m}/${p}`)}`)).code === 0;

  let legacy: { default?: string; labels: CfgLabel[] } | undefined;
  for (const file of LEGACY_CONFIGS) {
    const r = await s.exec(`cat ${shq(`${m}/${file}`)}`);
    if (r.code !== 0) continue;
    // A path without a leading slash is relative to the config's directory.
    const dir = file.includes('/') ? file.slice(0, file.lastIndexOf('/')) : '';
    const resolve = async (p: string) => ((await exists(p)) || !dir ? p : `${dir}/${p}`);
    const parsed = parseLabels(r.stdout);
    const labels: CfgLabel[] = [];
    for (const l of parsed.labels) {
      const initrds: string[] = [];
      for (const i of l.initrds) initrds.push(await resolve(i));
      labels.push({ ...l, kernel: l.kernel && (await resolve(l.kernel)), initrds });
    }
    legacy = { default: parsed.default, labels };
    break;
  }
  const adoptees = await chooseAdoptees(legacy, exists, opts.append);
  if (!adoptees.some((a) => a.slot === 'lts')) {
    throw new UsageError(
      `failed to install the bootloader on ${host}: nothing bootable to adopt on ${m} (expected boot/vmlinuz-lts and boot/initramfs-lts, ` +
        'or a syslinux config whose default label names existing files); make a new medium with `ramboot format`',
      { step: 'bootloader install', host, input: m },
    );
  }

  // Hash everything first: the space check must come before the first write.
  const sizes = new Map<string, { sha256: string; bytes: number }>();
  for (const f of new Set(adoptees.flatMap((a) => [a.kernel, ...a.initrds]))) {
    const out = await s.check('hash a boot file', `sha256sum ${shq(`${m}/${f}`)} && wc -c < ${shq(`${m}/${f}`)}`, { timeoutMs: 300_000 });
    const [line, size] = out.trim().split('\n');
    sizes.set(f, { sha256: line!.split(/\s+/)[0]!, bytes: Number(size) });
  }
  const content = (f: string, kind: ContentKind) => contentPath(sizes.get(f)!.sha256, kind);
  const copies = new Map<string, string>();
  for (const a of adoptees) {
    copies.set(a.kernel, content(a.kernel, 'vmlinuz'));
    for (const i of a.initrds) copies.set(i, content(i, /ucode/.test(i) ? 'ucode' : 'initramfs'));
  }
  const toCopy = [...copies].filter(([, dest]) => !state.files.has(dest));
  const need = toCopy.reduce((n, [src]) => n + sizes.get(src)!.bytes, 0) + SPACE_MARGIN_BYTES;
  if (state.freeBytes < need) {
    throw new UsageError(`failed to install the bootloader on ${host}: copying the current images needs ${need} bytes on ${m}, ${state.freeBytes} are free`, {
      step: 'bootloader install',
      host,
      input: m,
    });
  }

  await s.check('prepare the medium', `mkdir -p ${shq(`${m}/${FILES_DIR}`)} ${shq(`${m}/boot/syslinux`)}`);
  for (const [src, dest] of toCopy) {
    const part = `${m}/${dest}${PART_SUFFIX}`;
    await s.check('copy a boot file', `cp ${shq(`${m}/${src}`)} ${shq(part)}`, { timeoutMs: 300_000 });
    const got = await s.sha256(part);
    if (got !== sizes.get(src)!.sha256) {
      throw new RambootError(`failed to copy ${src} on ${host}: the copy hashes to ${got}, the original to ${sizes.get(src)!.sha256}`, { step: 'bootloader install', host });
    }
    await s.rename(part, `${m}/${dest}`);
  }
  await s.check('flush the medium', 'sync', { timeoutMs: SYNC_TIMEOUT_MS });

  const slots: SlotTable = {};
  for (const a of adoptees) {
    const kernel = copies.get(a.kernel)!;
    const initrds = a.initrds.map((i) => copies.get(i)!);
    const id = createHash('sha256').update([kernel, ...initrds].join('\n')).digest('hex').slice(0, 12);
    slots[a.slot] = { buildId: `adopted-${id}`, kernel, initrds, append: a.append };
  }

  // The former config keeps a backup; ours replaces syslinux.cfg in one rename.
  const movedAside: string[] = [];
  if (await exists(CFG_PATH)) {
    await s.check('back up syslinux.cfg', `cp ${shq(`${m}/${CFG_PATH}`)} ${shq(`${m}/${CFG_PATH}${BACKUP_SUFFIX}`)} && sync`);
    movedAside.push(`${CFG_PATH}${BACKUP_SUFFIX}`);
  }
  await writeCfg(s, m, slots);
  if (await exists(SHADOWING)) {
    await s.rename(`${m}/${SHADOWING}`, `${m}/${SHADOWING}${BACKUP_SUFFIX}`);
    movedAside.push(`${SHADOWING}${BACKUP_SUFFIX}`);
  }
  await installExtlinux(s, m);
  return { slots, adopted: adoptees.map((a) => a.slot), movedAside };
}

/**
 * The images to adopt: `lts` is what the former config boots by default (else
 * vmlinuz-lts/initramfs-lts); `old` and `new` are the labels or files of those names.
 */
async function chooseAdoptees(
  legacy: { default?: string; labels: CfgLabel[] } | undefined,
  exists: (path: string) => Promise<boolean>,
  append: string,
): Promise<Adoptee[]> {
  const out: Adoptee[] = [];
  const seen = new Set<string>();
  const bootable = async (l: CfgLabel | undefined) => !!l?.kernel && l.initrds.length > 0 && (await exists(l.kernel)) && (await all(l.initrds, exists));
  for (const slot of ['lts', 'old', 'new'] as SlotName[]) {
    const byDefault = slot === 'lts' ? legacy?.labels.find((l) => l.name === legacy.default) : undefined;
    const byLabel = legacy?.labels.find((l) => l.name === slot || l.kernel === `boot/vmlinuz-${slot}`);
    const files: CfgLabel = { name: slot, kernel: `boot/vmlinuz-${slot}`, initrds: [`boot/initramfs-${slot}`], append };
    let chosen: CfgLabel | undefined;
    for (const candidate of [byDefault, byLabel, files]) {
      if (await bootable(candidate)) {
        chosen = candidate;
        break;
      }
    }
    if (!chosen) continue;
    const key = [chosen.kernel, ...chosen.initrds].join(',');
    // The default label may be the one named old or new: each image goes into one slot only.
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ slot, kernel: chosen.kernel!, initrds: chosen.initrds, append: chosen === files ? append : userArgs(chosen.append) });
  }
  return out;
}

async function all(items: string[], pred: (s: string) => Promise<boolean>): Promise<boolean> {
  for (const i of items) if (!(await pred(i))) return false;
  return true;
}

/** Installs (or updates) extlinux in boot/syslinux: its boot-once entry is what a trial boot uses. */
async function installExtlinux(s: Session, medium: string): Promise<void> {
  await s.check('install extlinux', `extlinux --install ${shq(`${medium}/boot/syslinux`)} && sync`);
}

/**
 * UEFI: systemd-boot at the removable-media path and loader.conf; a medium that is not
 * managed yet is adopted. The reference NAS's UEFI layout is one unified kernel image at
 * EFI/BOOT/BOOTX64.EFI: it is copied, verified, into a content file and named by the lts
 * entry (systemd-boot starts it as an EFI program) before systemd-boot replaces it there,
 * so the medium boots an image at every moment.
 */
async function installUefi(s: Session, opts: { medium: string; append: string }): Promise<Omit<BootloaderResult, 'firmware'>> {
  const m = opts.medium;
  let managed: SlotTable | undefined;
  try {
    const state = await inspectMedium(s, m, 'uefi');
    if (state.cfg.managed) managed = state.cfg.slots;
  } catch (err) {
    // Managed, but systemd-boot is gone: that is what is installed here.
    if (!(err instanceof PreflightError && err.reason === 'no-systemd-boot')) throw err;
    managed = (await readEntrySlots(s, m)).slots;
  }
  const slots = managed ?? (await adoptUki(s, m, opts.append));
  await putFile(s, SD_BOOT_SOURCE, `${m}/${SD_BOOT_PATH}`, 'install systemd-boot');
  await s.check('write loader.conf', `mkdir -p ${shq(`${m}/loader`)} && cat > ${shq(`${m}/${LOADER_CONF}.tmp`)} && mv -f ${shq(`${m}/${LOADER_CONF}.tmp`)} ${shq(`${m}/${LOADER_CONF}`)} && sync`, {
    stdin: renderLoaderConf(),
  });
  return { slots, adopted: managed ? [] : ['lts'], movedAside: [] };
}

async function adoptUki(s: Session, m: string, append: string): Promise<SlotTable> {
  const host = s.target.name;
  const uki = `${m}/${SD_BOOT_PATH}`;
  if ((await s.exec(`test -f ${shq(uki)}`)).code !== 0) {
    throw new UsageError(`failed to install the bootloader on ${host}: nothing bootable to adopt on ${m} (expected a unified kernel image at ${SD_BOOT_PATH}); make a new medium with \`ramboot format --firmware uefi\``, {
      step: 'bootloader install',
      host,
      input: m,
    });
  }
  const sha256 = await s.sha256(uki);
  const dest = contentPath(sha256, 'efi');
  const part = `${m}/${dest}${PART_SUFFIX}`;
  await s.check('copy the unified kernel image', `mkdir -p ${shq(`${m}/${FILES_DIR}`)} && cp ${shq(uki)} ${shq(part)}`, { timeoutMs: 300_000 });
  const got = await s.sha256(part);
  if (got !== sha256) throw new RambootError(`failed to copy ${SD_BOOT_PATH} on ${host}: the copy hashes to ${got}, the original to ${sha256}`, { step: 'bootloader install', host });
  await s.rename(part, `${m}/${dest}`);
  const slots: SlotTable = { lts: { buildId: `adopted-${sha256.slice(0, 12)}`, kernel: dest, initrds: [], append } };
  await writeCfg(s, m, slots, 'uefi');
  return slots;
}

/** A file of the controller host onto the medium: a temporary name, verified, then renamed over the old one. */
async function putFile(s: Session, local: string, remote: string, step: string): Promise<void> {
  const want = createHash('sha256').update(readFileSync(local)).digest('hex');
  await s.check(step, `mkdir -p ${shq(remote.slice(0, remote.lastIndexOf('/')))}`);
  await s.upload(local, `${remote}${PART_SUFFIX}`);
  const got = await s.sha256(`${remote}${PART_SUFFIX}`);
  if (got !== want) throw new RambootError(`failed to ${step} on ${s.target.name}: ${remote} hashes to ${got}, expected ${want}`, { step, host: s.target.name });
  await s.rename(`${remote}${PART_SUFFIX}`, remote);
  await s.check('flush the medium', 'sync', { timeoutMs: SYNC_TIMEOUT_MS });
}
