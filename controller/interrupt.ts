// Ctrl-C and SIGTERM during work that must clean up (a build holds mounts): the first
// signal aborts the work, which undoes what it made and ends with an InterruptedError;
// a second one ends the process at once.

export async function interruptible<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (ac.signal.aborted) process.exit(signal === 'SIGINT' ? 130 : 143);
    ac.abort(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn(ac.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
