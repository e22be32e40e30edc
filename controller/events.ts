import type { OutcomeName, PhaseName } from './history.js';
import type { Submitted, Trigger } from './queue.js';

// What the long-running controller reports on top of the build's, the deploy's and the
// virtual NAS's events: commits noticed and queued, each reconcile's phases and outcome.

export type ControllerEvent =
  | { kind: 'noticed'; source: 'controller'; commit: string; trigger: Trigger; queued: Submitted | 'quarantined' | 'paused' }
  | { kind: 'superseded'; source: 'controller'; commit: string; by: string }
  | { kind: 'phase'; source: 'controller'; reconcile: string; commit: string; phase: PhaseName }
  | { kind: 'reconciled'; source: 'controller'; reconcile: string; commit: string; outcome: OutcomeName; message: string }
  /** A repository of several machines: the rollout of a commit ended (fleet.ts), whether every machine got it or not. */
  | { kind: 'rolled-out'; source: 'controller'; commit: string; results: { machine: string; outcome: string }[]; stoppedBy?: string; notReached: string[]; message: string }
  | { kind: 'heartbeat'; source: 'controller' };
