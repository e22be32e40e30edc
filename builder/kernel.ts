import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BuildError } from '../lib/errors.js';
import { isDeleted, type Deletions } from './overlay.js';

// The kernel (and microcode) come out of the new root's /boot; they are loaded by
// the bootloader, so /boot itself is left out of the image's segments.

export interface BootFile {
  name: string;
  path: string;
}

export function findBootFile(pattern: string, upper: string, lower: string, d: Deletions): BootFile | undefined {
  const re = new RegExp(`^${pattern.split('*').map(escape).join('.*')}$`);
  const candidates = new Map<string, string>();
  for (const [dir, fromLower] of [[lower, true], [upper, false]] as const) {
    const boot = join(dir, 'boot');
    if (!existsSync(boot)) continue;
    for (const name of readdirSync(boot)) {
      const path = join(boot, name);
      if (!re.test(name) || !statSync(path).isFile()) continue;
      if (fromLower && isDeleted(`boot/${name}`, d)) continue;
      candidates.set(name, path);
    }
  }
  const names = [...candidates.keys()].sort();
  const name = names[names.length - 1];
  return name ? { name, path: candidates.get(name)! } : undefined;
}

export function requireKernel(pattern: string, upper: string, lower: string, d: Deletions): BootFile {
  const k = findBootFile(pattern, upper, lower, d);
  if (!k) {
    throw new BuildError(
      `failed to find a kernel: nothing in /boot matches "${pattern}" (ramboot.yaml boot.kernel); ` +
        'add a kernel package (linux-lts on Alpine, linux-image-amd64 on Debian) or put one in root/boot',
      { step: 'find kernel', input: pattern },
    );
  }
  return k;
}

function escape(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}
