import type { Emit, OutputEvent, StageEvent, WarnEvent } from '../lib/events.js';
import { run, type RunOptions, type RunResult } from '../lib/run.js';

// What every step of a build shares: where its events go, and the signal that stops it
// (Ctrl-C or SIGTERM: the running command is stopped, then every mount is undone).

export type BuildEvent =
  | StageEvent
  | WarnEvent
  | OutputEvent
  | { kind: 'built'; source: 'build'; buildId: string; commit?: string; ms: number; stageReused: boolean; baseReused: boolean };

export interface Work {
  emit: Emit<BuildEvent>;
  signal?: AbortSignal;
}

/** Runs a command of the build: stopped by the work's signal, its output lines become the build log. */
export function runStep(work: Work, file: string, args: string[], opts: Omit<RunOptions, 'signal' | 'onLine'>): Promise<RunResult> {
  return run(file, args, { ...opts, signal: work.signal, onLine: (line) => work.emit({ kind: 'output', source: 'build', line }) });
}
