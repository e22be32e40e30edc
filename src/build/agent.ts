import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';

// The trial agent goes into every image (DESIGN.md §4): an openrc service in the boot
// runlevel that reboots a trial boot into `lts` unless the controller confirms it.
// Its scripts live in assets/agent so they can be read and tested as shell.

export interface ImageFile {
  path: string;
  mode: number;
  data: Buffer;
}

const asset = (name: string) => readFileSync(new URL(`../../assets/agent/${name}`, import.meta.url));

export function agentFiles(config: Config): ImageFile[] {
  const conf = [
    `CONFIRM_TIMEOUT=${Math.ceil(config.trial.confirm_timeout / 1000)}`,
    `WATCHDOG=${config.trial.watchdog ? 'yes' : 'no'}`,
    '',
  ].join('\n');
  return [
    { path: 'usr/sbin/ramboot-trial', mode: 0o755, data: asset('ramboot-trial') },
    { path: 'etc/init.d/ramboot-trial', mode: 0o755, data: asset('ramboot-trial.initd') },
    { path: 'etc/ramboot/trial.conf', mode: 0o644, data: Buffer.from(conf) },
  ];
}
