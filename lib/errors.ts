// Every error ramboot raises says which step failed, on what input, and why.
// Messages read "failed to <verb> <object>: <cause>" so a log line stands alone.
// docs/ARCHITECTURE.md ("Errors") lists the kinds and their exit codes.

/**
 * What the error asks of whoever sees it:
 * - `person`: something must be fixed (configuration, arguments, the medium, a key);
 *   repeating the same thing fails the same way.
 * - `retry`: a remote or a machine was unreachable before anything changed; the same
 *   request may succeed later.
 * - `failed`: the operation failed; the message says where.
 */
export type ErrorKind = 'person' | 'retry' | 'failed';

export interface ErrorContext {
  step: string;
  input?: string;
  host?: string;
  output?: string;
}

export class RambootError extends Error {
  readonly step: string;
  readonly input?: string;
  readonly host?: string;
  readonly output?: string;
  readonly kind: ErrorKind = 'failed';

  constructor(message: string, ctx: ErrorContext, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.step = ctx.step;
    this.input = ctx.input;
    this.host = ctx.host;
    this.output = ctx.output;
  }
}

/** The user must fix something (config, repository content, the machine). */
export class UsageError extends RambootError {
  override readonly kind: ErrorKind = 'person';
}

/** The command line itself is wrong: an unknown verb or option, a missing or malformed value. */
export class ArgumentError extends UsageError {
  constructor(message: string, verb?: string) {
    super(message, { step: 'parse arguments', input: verb });
  }
}

/** Something was unreachable before anything changed; worth trying again later. */
export class TransientError extends RambootError {
  override readonly kind: ErrorKind = 'retry';
}

/** A configuration file is wrong at a known place. */
export class ConfigError extends UsageError {
  readonly file: string;
  readonly line?: number;
  readonly key?: string;

  constructor(file: string, line: number | undefined, key: string | undefined, problem: string) {
    const where = [file, line !== undefined ? `line ${line}` : undefined, key ? `key ${key}` : undefined]
      .filter(Boolean)
      .join(', ');
    super(`${where}: ${problem}`, { step: 'config', input: file });
    this.file = file;
    this.line = line;
    this.key = key;
  }
}

/** A build step failed; nothing was published. */
export class BuildError extends RambootError {}

/** An external command exited non-zero. */
export class CommandError extends RambootError {
  readonly command: string;
  readonly exitCode?: number;

  constructor(step: string, command: string, exitCode: number | undefined, output: string, host?: string) {
    const tail = lastLines(output, 20);
    super(
      `failed to ${step}: \`${command}\` exited with ${exitCode ?? 'a signal'}${tail ? `\n${tail}` : ''}`,
      { step, input: command, output, host },
    );
    this.command = command;
    this.exitCode = exitCode;
  }
}

/** The work was stopped by SIGINT or SIGTERM; what it had made was cleaned up. */
export class InterruptedError extends RambootError {
  readonly signal: NodeJS.Signals;
  constructor(signal: NodeJS.Signals, step: string, after = 'everything it had mounted or written is removed') {
    super(`interrupted by ${signal} during ${step}; ${after}`, { step });
    this.signal = signal;
  }
}

/**
 * Exit codes of the ramboot command, one table for every verb. Deploy verdicts have
 * their own codes (deploy/verdict.ts) and `plan` says 2 for "changes" as
 * `terraform plan -detailed-exitcode` does.
 */
export const EXIT = {
  OK: 0,
  FAILED: 1,
  PLAN_CHANGES: 2,
  INCOMPLETE: 20,
  USAGE: 64,
  RETRY: 75,
  INTERRUPTED: 130,
  TERMINATED: 143,
} as const;

/** The exit code for an error that ended a command. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof InterruptedError) return err.signal === 'SIGINT' ? EXIT.INTERRUPTED : EXIT.TERMINATED;
  if (err instanceof ArgumentError) return EXIT.USAGE;
  if (err instanceof RambootError && err.kind === 'retry') return EXIT.RETRY;
  return EXIT.FAILED;
}

export function lastLines(text: string, n: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
