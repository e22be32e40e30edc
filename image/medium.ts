// The boot medium as an image's fstab mounts it, and whether that mount keeps the
// secrets segment private: on FAT every file has the mode the mount options give
// (fmask), so a stick mounted with the usual fmask=0133 shows the SSH host key and every
// secret to every local user. The reference NAS mounts it with fmask=0177,dmask=0077.

export interface MediumMount {
  mountpoint: string;
  /** The FAT volume id fstab names it by (UUID=XXXX-XXXX). */
  uuid?: string;
  type?: string;
  options?: string;
  /** The fstab line itself, for messages. */
  line?: string;
}

/** File systems whose file modes come from mount options, not from the files. */
const MASKED = new Set(['vfat', 'msdos', 'exfat', 'fat']);

/** The fstab entry for `mountpoint`, from fstab's text. */
export function parseFstabEntry(text: string, mountpoint: string): MediumMount {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const [spec, mp, type, options] = line.split(/\s+/);
    if (mp !== mountpoint || !spec) continue;
    return { mountpoint, uuid: spec.startsWith('UUID=') ? spec.slice(5).toUpperCase() : undefined, type, options, line };
  }
  return { mountpoint };
}

/** The masks the mount options give, in the kernel's order: umask sets both, fmask and dmask their own; later options win. */
function masks(options: string[]): { fmask: number; dmask: number } {
  // Without a mask the mount takes the mounting process's umask, usually 0022.
  const out = { fmask: 0o022, dmask: 0o022 };
  for (const o of options) {
    const [k, v] = o.split('=');
    if (v === undefined || !/^[0-7]+$/.test(v)) continue;
    const n = parseInt(v, 8);
    if (k === 'umask') out.fmask = out.dmask = n;
    else if (k === 'fmask') out.fmask = n;
    else if (k === 'dmask') out.dmask = n;
  }
  return out;
}

/**
 * Why a mount would let others read files on the medium, or undefined when it keeps them
 * root's alone. Media whose files keep their own modes (ext4…) are private: deploy writes
 * the secrets segment 0600.
 */
export function exposure(m: Pick<MediumMount, 'type' | 'options'>): string | undefined {
  if (!m.type || !MASKED.has(m.type)) return undefined;
  const { fmask, dmask } = masks((m.options ?? '').split(','));
  const problems: string[] = [];
  if ((fmask & 0o077) !== 0o077) problems.push(`fmask=${fmask.toString(8).padStart(4, '0')} lets others read its files`);
  if ((dmask & 0o077) !== 0o077) problems.push(`dmask=${dmask.toString(8).padStart(4, '0')} lets others list its directories`);
  return problems.length > 0 ? `${problems.join(' and ')}: mount it with fmask=0177,dmask=0077` : undefined;
}
