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

/**
 * What every command of a build starts with, whatever the builder's own settings: the
 * files it creates are 0644 and 0755 (umask 022), and what it writes does not depend on
 * the builder's locale or time zone. The same commit gives the same bytes.
 */
export const BUILD_UMASK = 0o022;
export const BUILD_ENV = { LANG: 'C', LC_ALL: 'C', TZ: 'UTC' } as const;

/** Runs a command of the build: stopped by the work's signal, its output lines become the build log. */
export function runStep(work: Work, file: string, args: string[], opts: Omit<RunOptions, 'signal' | 'onLine' | 'umask'>): Promise<RunResult> {
  return run(file, args, {
    ...opts,
    env: { ...opts.env, ...BUILD_ENV },
    umask: BUILD_UMASK,
    signal: work.signal,
    onLine: (line) => work.emit({ kind: 'output', source: 'build', line }),
  });
}
