import { parseCmdline } from '../image/cmdline.js';
import { RELEASE_FILE, parseRelease } from '../image/release.js';
import type { Session } from './ssh.js';

// What runs on the machine now: the boot, the build its image says it is, and the label
// syslinux booted. Deploy decides every step after a reboot from this, never from time.

/** What runs on the machine now. */
export interface Running {
  bootId: string;
  /** build= of /etc/ramboot-release; undefined on a system ramboot did not build. */
  build?: string;
  commit?: string;
  /** ramboot.slot= and ramboot.build= of /proc/cmdline: the label syslinux booted. */
  slot?: string;
  cmdlineBuild?: string;
}

const SEP = '--ramboot--';

export async function readRunning(session: Session): Promise<Running> {
  const out = await session.check(
    'read the running build',
    `cat /proc/sys/kernel/random/boot_id; echo ${SEP}; cat /proc/cmdline; echo ${SEP}; cat ${RELEASE_FILE} 2>/dev/null; true`,
  );
  const [bootId, cmdline, release] = out.split(`${SEP}\n`);
  const rel = parseRelease(release ?? '');
  const cmd = parseCmdline(cmdline ?? '');
  return { bootId: (bootId ?? '').trim(), build: rel.build, commit: rel.commit, slot: cmd.slot, cmdlineBuild: cmd.build };
}
