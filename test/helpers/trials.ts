import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VirtualNas } from './nas.js';
import type { Built } from './ramboot.js';

/** The watchdog armed early in a trial under qemu: the virtual NAS has an i6300esb. */
export const TRIAL_WATCHDOG = 'i6300esb heartbeat=60';

/**
 * A commit whose /init hangs before any service starts (no panic, no agent), built with
 * the trial watchdog: only the watchdog can end that trial. `restore` commits a working
 * /init again, without the watchdog.
 */
export async function hangingInit(nas: VirtualNas): Promise<{ built: Built; restore: () => Promise<Built> }> {
  const init = readFileSync(join(nas.repo, 'root/init'), 'utf8');
  const modules = readFileSync(join(nas.repo, 'root/etc/modules'), 'utf8');
  nas.settings({ watchdog: TRIAL_WATCHDOG });
  const built = await nas.change(
    // The module stays in the image: the example keeps only the modules /etc/modules lists.
    { 'root/init': ['#!/bin/sh\necho "this init hangs"\nwhile :; do sleep 1; done\n', 0o755], 'root/etc/modules': `${modules}i6300esb\n` },
    'an image whose init hangs, with the trial watchdog',
  );
  nas.settings();
  return { built, restore: () => nas.change({ 'root/init': [init, 0o755], 'root/etc/modules': modules }, 'a working init again, no watchdog') };
}
