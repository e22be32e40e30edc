import { AGENT_BIN } from '../image/agent.js';
import { shq } from './ssh.js';

// The controller's side of the conversation with the trial agent (image/agent.ts).

/** Exit status of confirmCommand when the machine is no longer on the trial boot it was asked about. */
export const EXIT_OTHER_BOOT = 97;

/**
 * Confirms the trial, but only on the boot the health checks ran against: a machine
 * that rebooted in between (the agent fired, a power cut) must not be confirmed.
 */
export function confirmCommand(bootId: string, agent = AGENT_BIN): string {
  return `[ "$(cat /proc/sys/kernel/random/boot_id)" = ${shq(bootId)} ] || exit ${EXIT_OTHER_BOOT}; ${shq(agent)} confirm`;
}

export const STATUS_COMMAND = `${AGENT_BIN} status`;
