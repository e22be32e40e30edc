import { execa, type Options } from 'execa';
import { CommandError, InterruptedError } from './errors.js';

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  /** Step name for the error message: "failed to <step>". */
  step: string;
  timeoutMs?: number;
  /** Stops the program and everything it started (SIGTERM to its process group) when aborted; the run then fails with an InterruptedError. */
  signal?: AbortSignal;
  /** Each line of output as it comes (stdout and stderr interleaved). */
  onLine?: (line: string) => void;
  /** The umask the program starts with, instead of this process's (set by a shell that then execs it). */
  umask?: number;
  /** False: the program gets `env` only, none of this process's environment. */
  extendEnv?: boolean;
  /**
   * How an abort stops the program, instead of SIGTERM to its process group: called once
   * the program runs, with its file descriptor 3 (a pipe it may write to); returns the stop.
   */
  stopWith?: (child: { pid: number; fd3: NodeJS.ReadableStream }) => () => void;
}

/** A program that ignores SIGTERM this long gets SIGKILL: a stop must end. */
const KILL_AFTER_MS = 10_000;

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a program; a non-zero exit becomes a CommandError carrying its output. */
export async function run(file: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const options: Options = {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: opts.extendEnv ?? true,
    input: opts.input,
    reject: false,
    all: true,
    stripFinalNewline: false,
    timeout: opts.timeoutMs,
    // Its own process group, so that an abort reaches what it started too (setup.sh's
    // children would otherwise hold the output pipes open, and the run, for as long as they live).
    detached: !!opts.signal,
    ...(opts.stopWith ? { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] as const } : {}),
  };
  if (opts.signal?.aborted) throw interrupted(opts);
  const child = opts.umask === undefined
    ? execa(file, args, options)
    : execa('/bin/sh', ['-c', `umask ${opts.umask.toString(8).padStart(3, '0')} && exec "$0" "$@"`, file, ...args], options);
  const group = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // The group is gone already.
    }
  };
  let killer: NodeJS.Timeout | undefined;
  const stop = opts.stopWith?.({ pid: child.pid!, fd3: child.stdio[3] as NodeJS.ReadableStream }) ?? (() => {
    group('SIGTERM');
    killer = setTimeout(() => group('SIGKILL'), KILL_AFTER_MS);
  });
  opts.signal?.addEventListener('abort', stop, { once: true });
  if (opts.onLine) {
    let rest = '';
    child.all?.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) opts.onLine!(l);
    });
    child.all?.on('end', () => rest && opts.onLine!(rest));
  }
  const r = await child.finally(() => {
    opts.signal?.removeEventListener('abort', stop);
    clearTimeout(killer);
  });
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
