import { UsageError } from '../lib/errors.js';

// The order in which one commit reaches the machines of a repository of several: the
// canary alone, then the others in name order, at most `parallel` at a time. A machine
// that does not come through stops the rollout: no machine is started after it, those
// already started finish, and the rest are reported as not reached. So does a newer
// commit waiting: the machines not reached get that one instead.

export interface RolloutSettings {
  canary?: string;
  parallel: number;
}

/** How one machine's reconcile of the commit ended, as the rollout needs to know it. */
export interface MachineResult {
  machine: string;
  /** It runs the commit now (promoted, or already running it). */
  ok: boolean;
  /** It could not be reached or built now: the whole rollout is tried again later. */
  retry?: boolean;
  outcome: string;
  message: string;
}

export interface RolloutResult {
  results: MachineResult[];
  /** Machines never started: the rollout stopped before them. */
  notReached: string[];
  /** The first machine that did not come through. */
  stoppedBy?: MachineResult;
}

/** The machines in rollout order: the canary first, then the others by name. */
export function rolloutOrder(machines: string[], s: RolloutSettings): string[] {
  const sorted = [...machines].sort();
  if (s.canary === undefined) return sorted;
  if (!sorted.includes(s.canary)) {
    throw new UsageError(`rollout.canary (ramboot.yaml) names machine "${s.canary}", which the repository does not describe; its machines are ${sorted.join(', ')}`, {
      step: 'rollout',
      input: s.canary,
    });
  }
  return [s.canary, ...sorted.filter((m) => m !== s.canary)];
}

/**
 * Runs `one` for each machine in rollout order. With a canary, it runs alone and the
 * others wait for it; then up to `parallel` run at once.
 */
export async function rollOut(
  machines: string[],
  s: RolloutSettings,
  one: (machine: string) => Promise<MachineResult>,
  /** A newer commit waits: no machine is started for this one any more. */
  superseded: () => boolean = () => false,
): Promise<RolloutResult> {
  const order = rolloutOrder(machines, s);
  const results: MachineResult[] = [];
  let stoppedBy: MachineResult | undefined;
  let next = 0;
  const take = (r: MachineResult) => {
    results.push(r);
    // A failure that needs a person outranks one to try again later: it decides what the rollout does.
    if (!r.ok && (!stoppedBy || (stoppedBy.retry && !r.retry))) stoppedBy = r;
  };
  const go = () => !stoppedBy && !superseded() && next < order.length;
  if (s.canary !== undefined && go()) take(await one(order[next++]!));
  const worker = async () => {
    while (go()) take(await one(order[next++]!));
  };
  await Promise.all(Array.from({ length: Math.min(s.parallel, order.length) }, worker));
  return { results, notReached: order.slice(next), stoppedBy };
}
