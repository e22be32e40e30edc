import { RambootError, describe } from '../lib/errors.js';
import { run } from '../lib/run.js';
import { readRunning, type Running } from './running.js';
import { connect, type Session, type Target } from './ssh.js';

// Rebooting the machine and watching it come back. The reboot drops the connection
// (that is success, not an error); the machine's return is detected by polling with a
// per-attempt timeout until its boot id changes, never by assuming a duration.

/** openrc-shutdown on openrc-init systems; `reboot` where busybox or sysvinit is init. */
export const REBOOT_COMMAND = 'openrc-shutdown -r now || reboot';
export const POLL_PERIOD_MS = 2_000;
export const POLL_ATTEMPT_TIMEOUT_MS = 10_000;
/** A booting machine behind a port forward accepts TCP and says nothing: a poll stops listening after this. */
export const POLL_BANNER_TIMEOUT_MS = 3_000;

/** Asks the machine to reboot; returns once the request was accepted or the connection dropped. */
export async function requestReboot(session: Session): Promise<void> {
  const r = await session.exec(REBOOT_COMMAND, { tolerateDisconnect: true, timeoutMs: 30_000 });
  if (!r.disconnected && r.code !== 0) {
    const output = `${r.stdout}${r.stderr}`.trim();
    throw new RambootError(`failed to reboot ${session.target.name}: \`${REBOOT_COMMAND}\` exited with ${r.code ?? r.signal}${output ? `\n${output}` : ''}`, {
      step: 'reboot',
      host: session.target.name,
      output,
    });
  }
}

export type Observation = { reachable: true; running: Running } | { reachable: false; error: string };

/** One look at the machine over a fresh connection. */
export async function observe(target: Target, timeoutMs = POLL_ATTEMPT_TIMEOUT_MS): Promise<Observation> {
  let session: Session | undefined;
  try {
    session = await connect(target, timeoutMs, { bannerTimeoutMs: Math.min(POLL_BANNER_TIMEOUT_MS, timeoutMs) });
    return { reachable: true, running: await readRunning(session) };
  } catch (err) {
    return { reachable: false, error: describe(err) };
  } finally {
    session?.close();
  }
}

export interface WaitEvent {
  elapsedMs: number;
  observation: Observation;
}

/**
 * Polls until `accept` says yes or the deadline passes. Returns the accepted state, or
 * the last observation when time ran out.
 */
export async function waitUntil(
  target: Target,
  deadlineMs: number,
  accept: (r: Running) => boolean,
  onPoll?: (e: WaitEvent) => void,
): Promise<{ running?: Running; last: Observation }> {
  const started = Date.now();
  let last: Observation = { reachable: false, error: 'not polled yet' };
  while (Date.now() - started < deadlineMs) {
    const attemptStarted = Date.now();
    last = await observe(target, Math.min(POLL_ATTEMPT_TIMEOUT_MS, Math.max(1_000, deadlineMs - (attemptStarted - started))));
    onPoll?.({ elapsedMs: Date.now() - started, observation: last });
    if (last.reachable && accept(last.running)) return { running: last.running, last };
    const wait = POLL_PERIOD_MS - (Date.now() - attemptStarted);
    if (wait > 0) await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, deadlineMs - (Date.now() - started)))));
  }
  return { last };
}

/** Runs the configured power-cycle command on the controller (a smart plug, IPMI, qemu's monitor). */
export async function powerCycle(target: Target): Promise<void> {
  const how = target.powerCycle;
  if (!how) throw new RambootError(`failed to power-cycle ${target.name}: no trial.power_cycle command configured`, { step: 'power cycle', host: target.name });
  if (typeof how === 'function') {
    await how();
    return;
  }
  await run('sh', ['-c', how], { step: `power-cycle ${target.name}`, timeoutMs: 120_000 });
}
