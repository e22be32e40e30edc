import { EXIT } from '../lib/errors.js';

// SIGINT and SIGTERM, one way for every verb and for `ramboot up`: the first signal
// starts an orderly stop (work that must clean up is aborted: a build undoes its mounts;
// `ramboot up` lets its last notices out), a second one ends the process at once.

/** The exit code of a process a signal ended, as the README's table says. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGINT' ? EXIT.INTERRUPTED : EXIT.TERMINATED;
}

/** Calls `stop` on the first SIGINT or SIGTERM; a second signal exits. Returns what stops listening. */
export function onStopSignal(stop: (signal: NodeJS.Signals) => void): () => void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(signalExitCode(signal));
    stopping = true;
    stop(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

/** Runs work that must clean up: the first signal aborts it, and it ends with an InterruptedError. */
export async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const off = onStopSignal((signal) => ac.abort(signal));
  try {
    return await fn(ac.signal);
  } finally {
    off();
  }
}
