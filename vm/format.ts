import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readManifest } from '../image/manifest.js';
import { candidateFiles, type CandidateFile, type Firmware } from '../deploy/medium.js';
import { CFG_PATH, renderSyslinuxCfg, type SlotEntry } from '../deploy/slots.js';
import { LOADER_CONF, SD_BOOT_PATH, SD_BOOT_SOURCE, entriesFor, renderLoaderConf } from '../deploy/entries.js';
import { UsageError } from '../lib/errors.js';
import type { Emit, StageEvent } from '../lib/events.js';
import { PRIVATE_FILE } from '../lib/private-file.js';
import { run } from '../lib/run.js';

// `ramboot format`: a new boot medium as a disk image, written without root and without
// mounting: the FAT with the volume id the image's fstab mounts, the image in `lts`.
// BIOS: the FAT fills the disk (no partition table), syslinux boots it. UEFI: a GPT with
// one EFI system partition holding that FAT, systemd-boot at the removable-media path
// and Boot Loader Specification entries (deploy/entries.ts).

/** The ESP starts at 1 MiB (the usual alignment); mtools reaches it at this byte offset. */
const ESP_START_MIB = 1;
const SECTOR = 512;

export interface FormatOptions {
  disk: string;
  imageDir: string;
  /** Size in MiB; by default room for three images. */
  sizeMiB?: number;
  /** The machine's firmware: what the medium is laid out for (default bios). */
  firmware?: Firmware;
  emit?: Emit<StageEvent>;
}

export async function formatDisk(opts: FormatOptions): Promise<{ volumeId: string; sizeMiB: number }> {
  const stage = (message: string) => opts.emit?.({ kind: 'stage', source: 'format', message });
  const firmware = opts.firmware ?? 'bios';
  const m = await readManifest(opts.imageDir);
  if (!m.medium?.uuid) {
    throw new UsageError(
      `failed to format ${opts.disk}: image ${m.buildId} has no fstab line for its boot medium (UUID=XXXX-XXXX at ${m.medium?.mountpoint ?? 'boot.medium'})`,
      { step: 'format', input: opts.imageDir },
    );
  }
  if (firmware === 'uefi' && !existsSync(SD_BOOT_SOURCE)) {
    throw new UsageError(`failed to format ${opts.disk} for UEFI: no systemd-boot at ${SD_BOOT_SOURCE}; install systemd-boot-efi (apt-get install systemd-boot-efi, or run scripts/setup.sh)`, {
      step: 'format',
      input: SD_BOOT_SOURCE,
    });
  }
  const volumeId = m.medium.uuid.replace('-', '');
  const { kernel, initrds } = candidateFiles(opts.imageDir, m);
  const imageMiB = Math.ceil([kernel, ...initrds].reduce((n, f) => n + f.bytes, 0) / 2 ** 20);
  const sizeMiB = opts.sizeMiB ?? Math.max(256, imageMiB * 4 + 64);

  stage(`formatting ${opts.disk} for ${firmware} (${sizeMiB} MiB, volume id ${m.medium.uuid})`);
  rmSync(opts.disk, { force: true });
  createDiskFile(opts.disk, sizeMiB * 2 ** 20);
  const lts: SlotEntry = { buildId: m.buildId, kernel: kernel.path, initrds: initrds.map((f) => f.path), append: m.append };
  if (firmware === 'uefi') await layOutUefi(opts.disk, sizeMiB, volumeId, [kernel, ...initrds], lts, stage);
  else await layOutBios(opts.disk, volumeId, [kernel, ...initrds], lts, stage);
  stage(`formatted ${opts.disk}: ${m.buildId} in lts`);
  return { volumeId: m.medium.uuid, sizeMiB };
}

/** The FAT over the whole disk, syslinux in boot/syslinux, the image's files, syslinux.cfg naming them in lts. */
async function layOutBios(disk: string, volumeId: string, files: CandidateFile[], lts: SlotEntry, stage: (m: string) => void): Promise<void> {
  await run('mkfs.vfat', ['-F', '32', '-i', volumeId, '-n', 'RAMBOOT', disk], { step: 'make the FAT file system' });
  await mtools('mmd', ['-i', disk, '::/boot', '::/boot/syslinux', '::/boot/ramboot']);
  await run('syslinux', ['--install', '--directory', '/boot/syslinux', disk], { step: 'install syslinux' });
  stage('copying the image into the lts slot');
  for (const f of files) await mtools('mcopy', ['-i', disk, f.local, `::/${f.path}`]);
  await writeFiles(disk, [{ path: CFG_PATH, text: renderSyslinuxCfg({ lts }) }]);
}

/**
 * A GPT with one EFI system partition from 1 MiB to 1 MiB before the end (the backup GPT
 * lives in the last 33 sectors), the FAT made inside it in place (mkfs.vfat --offset),
 * then systemd-boot, loader.conf, the image's files and the lts entry, written through
 * mtools' `@@offset` (the partition, not the disk).
 */
async function layOutUefi(disk: string, sizeMiB: number, volumeId: string, files: CandidateFile[], lts: SlotEntry, stage: (m: string) => void): Promise<void> {
  const espMiB = sizeMiB - 2 * ESP_START_MIB;
  const startSector = (ESP_START_MIB * 2 ** 20) / SECTOR;
  await run('sgdisk', ['--clear', `--new=1:${startSector}:+${espMiB}M`, '--typecode=1:EF00', '--change-name=1:RAMBOOT', disk], { step: 'make the GPT with the EFI system partition' });
  // The block count (KiB) keeps the FAT inside the partition: by default mkfs.vfat fills the file from the offset.
  await run('mkfs.vfat', ['-F', '32', '--offset', String(startSector), '-i', volumeId, '-n', 'RAMBOOT', disk, String(espMiB * 1024)], { step: 'make the FAT file system in the EFI system partition' });
  const esp = `${disk}@@${ESP_START_MIB}M`;
  await mtools('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT', '::/loader', '::/loader/entries', '::/boot', '::/boot/ramboot']);
  await mtools('mcopy', ['-i', esp, SD_BOOT_SOURCE, `::/${SD_BOOT_PATH}`]);
  stage('copying the image into the lts slot');
  for (const f of files) await mtools('mcopy', ['-i', esp, f.local, `::/${f.path}`]);
  await writeFiles(esp, [{ path: LOADER_CONF, text: renderLoaderConf() }, ...entriesFor({ lts })]);
}

/** Small text files (a configuration, an entry) written onto the FAT `image` (mtools `-i` argument). */
async function writeFiles(image: string, files: { path: string; text: string }[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ramboot-format-'));
  try {
    for (const [i, f] of files.entries()) {
      const local = join(dir, String(i));
      writeFileSync(local, f.text);
      await mtools('mcopy', ['-o', '-i', image, local, `::/${f.path}`]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The firmware a disk made by formatDisk is laid out for: a GPT header ("EFI PART" at LBA 1) means UEFI. */
export function diskFirmware(disk: string): Firmware {
  const fd = openSync(disk, 'r');
  try {
    const sig = Buffer.alloc(8);
    readSync(fd, sig, 0, 8, SECTOR);
    return sig.toString('latin1') === 'EFI PART' ? 'uefi' : 'bios';
  } finally {
    closeSync(fd);
  }
}

/**
 * The disk file, sparse and 0600 before anything is written to it: it will hold the
 * secrets segment, and `mkfs.vfat -C` would create it with the umask (0644 under 022).
 */
function createDiskFile(path: string, bytes: number): void {
  const fd = openSync(path, 'wx', PRIVATE_FILE);
  try {
    ftruncateSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
}

function mtools(cmd: string, args: string[]) {
  return run(cmd, args, { step: `${cmd} on the disk image`, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
}
