import { execa, type Options } from 'execa';
import { CommandError } from './errors.js';

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  /** Step name for the error message: "failed to <step>". */
  step: string;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a program; a non-zero exit becomes a CommandError carrying its output. */
export async function run(file: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const options: Options = {
    cwd: opts.cwd,
    env: opts.env,
    input: opts.input,
    reject: false,
    all: true,
    stripFinalNewline: false,
    timeout: opts.timeoutMs,
  };
  const r = await execa(file, args, options);
  if (r.exitCode !== 0 || r.failed) {
    throw new CommandError(opts.step, [file, ...args].join(' '), r.exitCode, String(r.all ?? r.stderr ?? ''));
  }
  return { stdout: String(r.stdout), stderr: String(r.stderr) };
}
