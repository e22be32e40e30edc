import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The fstab line that mounts the boot medium: `ramboot format` gives the disk that volume id. */
export function mediumFromFstab(root: string, mountpoint: string): { mountpoint: string; uuid?: string } {
  const fstab = join(root, 'etc/fstab');
  const text = existsSync(fstab) ? readFileSync(fstab, 'utf8') : '';
  for (const line of text.split('\n')) {
    const [spec, mp] = line.replace(/#.*/, '').trim().split(/\s+/);
    if (mp === mountpoint && spec?.startsWith('UUID=')) return { mountpoint, uuid: spec.slice(5).toUpperCase() };
  }
  return { mountpoint };
}
