// Progress is typed events: each room declares the events it emits (builder/build.ts,
// deploy/deploy.ts, vm/qemu.ts, controller/events.ts) and takes an `emit` function; the
// controller renders them in one place (controller/render.ts) for a terminal, for plain
// logs, as JSON, on the status page and in `git push` output.

/** Which part of ramboot an event comes from. */
export type Source = 'build' | 'format' | 'vm' | 'deploy' | 'controller' | 'secrets' | 'registry';

/** A new stage of long work began. */
export interface StageEvent {
  kind: 'stage';
  source: Source;
  message: string;
  /** Its place among a fixed number of stages (the build's), shown as "[n/of]". */
  step?: { n: number; of: number };
}

/** Something the user should know that does not stop the work. */
export interface WarnEvent {
  kind: 'warn';
  source: Source;
  message: string;
}

/** A line a command printed (the package manager, setup.sh, go build): the build log. */
export interface OutputEvent {
  kind: 'output';
  source: Source;
  line: string;
}

export type Emit<E> = (event: E) => void;

export const ignoreEvents: Emit<unknown> = () => {};
