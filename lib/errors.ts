// Every error ramboot raises says which step failed, on what input, and why.
// Messages read "failed to <verb> <object>: <cause>" so a log line stands alone.

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

  constructor(message: string, ctx: ErrorContext, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.step = ctx.step;
    this.input = ctx.input;
    this.host = ctx.host;
    this.output = ctx.output;
  }
}

/** The user must fix something (config, arguments, repository content). */
export class UsageError extends RambootError {}

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

export function lastLines(text: string, n: number): string {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
