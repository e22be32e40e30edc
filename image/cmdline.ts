// The ramboot.* keys of the kernel command line. Each label of syslinux.cfg carries
// them on its APPEND line (renderSlotArgs); the trial agent and deploy read them back
// from /proc/cmdline (parseCmdline) to know which label booted and which build it is.

export const SLOT_KEY = 'ramboot.slot';
export const BUILD_KEY = 'ramboot.build';
/** Reboot 10 s after a kernel panic: a trial that panics comes back on the default label. */
export const PANIC_ARG = 'panic=10';

/** The arguments ramboot puts first on a label's APPEND line. */
export function renderSlotArgs(slot: string, buildId: string): string {
  return `${PANIC_ARG} ${SLOT_KEY}=${slot} ${BUILD_KEY}=${buildId}`;
}

export function parseCmdline(text: string): { slot?: string; build?: string } {
  const args = text.trim().split(/\s+/);
  const value = (key: string) => args.find((a) => a.startsWith(`${key}=`))?.slice(key.length + 1);
  return { slot: value(SLOT_KEY), build: value(BUILD_KEY) };
}

/** An APPEND line without the arguments renderSlotArgs adds: the user's own arguments. */
export function userArgs(append: string): string {
  return append
    .split(/\s+/)
    .filter((a) => a && a !== PANIC_ARG && !a.startsWith(`${SLOT_KEY}=`) && !a.startsWith(`${BUILD_KEY}=`))
    .join(' ');
}
