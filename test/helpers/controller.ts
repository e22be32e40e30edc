import { execa, type ResultPromise } from 'execa';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ControllerStatus } from '../../controller/controller.js';
import type { ReconcileRecord } from '../../controller/history.js';
import { CLI } from './ramboot.js';

// `ramboot up` as a process of its own, as a user runs it, and the ways a test watches
// it: its API (status, history) and its output, kept in a log file.

export interface RunningController {
  proc: ResultPromise;
  api: string;
  log: string;
  status(): Promise<ControllerStatus>;
  history(): Promise<ReconcileRecord[]>;
  /** The newest record of a commit that matches. */
  record(commit: string, pred?: (r: ReconcileRecord) => boolean): Promise<ReconcileRecord | undefined>;
  /** Waits until a record of the commit is done (or matches pred), and returns it. */
  waitFor(commit: string, timeoutMs: number, pred?: (r: ReconcileRecord) => boolean): Promise<ReconcileRecord>;
  waitStatus(what: string, timeoutMs: number, pred: (s: ControllerStatus) => boolean): Promise<ControllerStatus>;
  token(): string;
  kill(signal: NodeJS.Signals): Promise<void>;
}

export async function startController(args: string[], o: { state: string; listen: number; env: Record<string, string>; logFile: string }): Promise<RunningController> {
  // An empty state: the default state directory, as a user who gives no --state gets.
  const proc = execa('node', [CLI, 'up', ...(o.state ? ['--state', o.state] : []), '--listen', `127.0.0.1:${o.listen}`, ...args], {
    reject: false,
    stdin: 'ignore',
    env: { ...process.env, ...o.env },
  });
  const out = createWriteStream(o.logFile, { flags: 'a' });
  proc.stdout!.pipe(out);
  proc.stderr!.pipe(out);
  const api = `http://127.0.0.1:${o.listen}`;
  const get = async <T>(path: string): Promise<T> => (await (await fetch(`${api}${path}`)).json()) as T;
  const c: RunningController = {
    proc,
    api,
    log: o.logFile,
    status: () => get<ControllerStatus>('/api/status'),
    history: () => get<ReconcileRecord[]>('/api/history'),
    async record(commit, pred = () => true) {
      return (await c.history()).find((r) => r.commit === commit && pred(r));
    },
    async waitFor(commit, timeoutMs, pred = (r) => r.state === 'done') {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const r = await c.record(commit, pred).catch(() => undefined);
        if (r) return r;
        if (proc.exitCode !== null) throw new Error(`the controller exited with ${proc.exitCode}; see ${o.logFile}:\n${tail(o.logFile)}`);
        if (Date.now() > end) throw new Error(`no finished reconcile of ${commit.slice(0, 12)} within ${timeoutMs / 1000} s; see ${o.logFile}:\n${tail(o.logFile)}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    },
    async waitStatus(what, timeoutMs, pred) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const s = await c.status().catch(() => undefined);
        if (s && pred(s)) return s;
        if (proc.exitCode !== null) throw new Error(`the controller exited with ${proc.exitCode} while waiting for ${what}:\n${tail(o.logFile)}`);
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; see ${o.logFile}:\n${tail(o.logFile)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    token: () => readFileSync(join(o.state, 'api-token'), 'utf8').trim(),
    async kill(signal) {
      // Not execa's kill, which follows a SIGTERM with a SIGKILL after 5 s: the controller's stop is under test.
      process.kill(proc.pid!, signal);
      await proc;
    },
  };
  // Up once the API answers (the virtual NAS may still be booting: it starts before the API).
  const end = Date.now() + 15 * 60_000;
  while (!(await c.status().then(() => true, () => false))) {
    if (proc.exitCode !== null) throw new Error(`ramboot up exited with ${proc.exitCode}:\n${tail(o.logFile)}`);
    if (Date.now() > end) throw new Error(`ramboot up did not serve its API within 15 min:\n${tail(o.logFile)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  return c;
}

export function tail(file: string, lines = 40): string {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n') : '';
}
