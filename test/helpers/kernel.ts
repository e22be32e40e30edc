import { readdirSync } from 'node:fs';

// The Debian cloud kernel scripts/setup.sh installs (linux-image-cloud-amd64). Its
// version moves with every Debian point release, so it is found, never written down.

/** The newest installed cloud kernel's version, e.g. "6.1.0-57-cloud-amd64". */
export function cloudKernelVersion(): string {
  const versions = readdirSync('/boot')
    .map((n) => /^vmlinuz-(.+-cloud-amd64)$/.exec(n)?.[1])
    .filter((v): v is string => !!v)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const newest = versions.at(-1);
  if (!newest) throw new Error('no /boot/vmlinuz-*-cloud-amd64: the tests boot Debian\'s cloud kernel; run scripts/setup.sh (it installs linux-image-cloud-amd64)');
  return newest;
}
