import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseFstabEntry, type MediumMount } from '../image/medium.js';

/** The fstab line that mounts the boot medium: `ramboot format` gives the disk that volume id. */
export function mediumFromFstab(root: string, mountpoint: string): MediumMount {
  const fstab = join(root, 'etc/fstab');
  return parseFstabEntry(existsSync(fstab) ? readFileSync(fstab, 'utf8') : '', mountpoint);
}
