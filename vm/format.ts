import { closeSync, ftruncateSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readManifest } from '../image/manifest.js';
import { candidateFiles } from '../deploy/medium.js';
import { CFG_PATH, renderSyslinuxCfg } from '../deploy/slots.js';
import { UsageError } from '../lib/errors.js';
import type { Emit, StageEvent } from '../lib/events.js';
import { PRIVATE_FILE } from '../lib/private-file.js';
import { run } from '../lib/run.js';

// `ramboot format`: a new boot medium as a disk image, written with mtools (no mount):
// FAT with the volume id the image's fstab mounts, syslinux, the image in `lts`.

export interface FormatOptions {
  disk: string;
  imageDir: string;
  /** Size in MiB; by default room for three images. */
  sizeMiB?: number;
  emit?: Emit<StageEvent>;
}

export async function formatDisk(opts: FormatOptions): Promise<{ volumeId: string; sizeMiB: number }> {
  const stage = (message: string) => opts.emit?.({ kind: 'stage', source: 'format', message });
  const m = await readManifest(opts.imageDir);
  if (!m.medium?.uuid) {
    throw new UsageError(
      `failed to format ${opts.disk}: image ${m.buildId} has no fstab line for its boot medium (UUID=XXXX-XXXX at ${m.medium?.mountpoint ?? 'boot.medium'})`,
      { step: 'format', input: opts.imageDir },
    );
  }
  const volumeId = m.medium.uuid.replace('-', '');
  const { kernel, initrds } = candidateFiles(opts.imageDir, m);
  const imageMiB = Math.ceil([kernel, ...initrds].reduce((n, f) => n + f.bytes, 0) / 2 ** 20);
  const sizeMiB = opts.sizeMiB ?? Math.max(256, imageMiB * 4 + 64);

  stage(`formatting ${opts.disk} (${sizeMiB} MiB, volume id ${m.medium.uuid})`);
  rmSync(opts.disk, { force: true });
  createDiskFile(opts.disk, sizeMiB * 2 ** 20);
  await run('mkfs.vfat', ['-F', '32', '-i', volumeId, '-n', 'RAMBOOT', opts.disk], { step: 'make the FAT file system' });
  await mtools('mmd', ['-i', opts.disk, '::/boot', '::/boot/syslinux', '::/boot/ramboot']);
  await run('syslinux', ['--install', '--directory', '/boot/syslinux', opts.disk], { step: 'install syslinux' });

  stage('copying the image into the lts slot');
  for (const f of [kernel, ...initrds]) await mtools('mcopy', ['-i', opts.disk, f.local, `::/${f.path}`]);
  const cfg = join(opts.imageDir, '..', `.syslinux-${process.pid}.cfg`);
  const lts = { buildId: m.buildId, kernel: kernel.path, initrds: initrds.map((f) => f.path), append: m.append };
  writeFileSync(cfg, renderSyslinuxCfg({ lts }));
  try {
    await mtools('mcopy', ['-o', '-i', opts.disk, cfg, `::/${CFG_PATH}`]);
  } finally {
    rmSync(cfg, { force: true });
  }
  stage(`formatted ${opts.disk}: ${m.buildId} in lts`);
  return { volumeId: m.medium.uuid, sizeMiB };
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
