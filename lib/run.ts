import { execa, type Options } from 'execa';
import { CommandError, InterruptedError } from './errors.js';

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  /** Step name for the error message: "failed to <step>". */
  step: string;
  timeoutMs?: number;
  /** Stops the program (SIGTERM) when aborted; the run then fails with an InterruptedError. */
  signal?: AbortSignal;
  /** Each line of output as it comes (stdout and stderr interleaved). */
  onLine?: (line: string) => void;
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
    cancelSignal: opts.signal,
  };
  if (opts.signal?.aborted) throw interrupted(opts);
  const child = execa(file, args, options);
  if (opts.onLine) {
    let rest = '';
    child.all?.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) opts.onLine!(l);
    });
    child.all?.on('end', () => rest && opts.onLine!(rest));
  }
  const r = await child;
  if (opts.signal?.aborted) throw interrupted(opts);
  if (r.exitCode !== 0 || r.failed) {
    throw new CommandError(opts.step, [file, ...args].join(' '), r.exitCode, String(r.all ?? r.stderr ?? ''));
  }
  return { stdout: String(r.stdout), stderr: String(r.stderr) };
}

function interrupted(opts: RunOptions): InterruptedError {
  const reason = opts.signal?.reason;
  return new InterruptedError(reason === 'SIGTERM' ? 'SIGTERM' : 'SIGINT', opts.step);
}
