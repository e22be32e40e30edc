import type { Reason } from '../deploy/verdict.js';
import type { Plan } from '../plan/compare.js';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { appendPrivateFile, makePrivateDir, writePrivateFile } from '../lib/private-file.js';
import type { Trigger } from './queue.js';

// One small JSON record per reconcile, and its log beside it (the events it emitted,
// one JSON line each): history is a directory listing away, readable with jq. Failed,
// rolled-back and superseded attempts are kept like the others; the oldest go when
// there are more than the configured count. Records and logs are private (0600): a
// build's output and a health check's may show what the machine holds.

/** How a reconcile ended. Deploy's verdicts, and what the controller adds before a deploy. */
export const OUTCOME = {
  PROMOTED: 'promoted',
  BUILD_FAILED: 'build-failed',
  UPLOAD_FAILED: 'upload-failed',
  NOT_HEALTHY: 'trial-not-healthy',
  UNREACHABLE: 'trial-unreachable',
  MEDIUM_DAMAGED: 'medium-damaged',
  /** The commit's signature is missing or not from an allowed signer: nothing was built. */
  UNTRUSTED: 'untrusted-commit',
  /** A newer commit arrived while this one waited. */
  SUPERSEDED: 'superseded',
  /** Something was unreachable before anything changed; the reconcile is tried again. */
  RETRY: 'retry-later',
  /** The controller stopped (SIGTERM) before the verdict; the journal resumes the deploy. */
  INTERRUPTED: 'interrupted',
  /** In a repository of several machines: the commit failed on a machine reached before this one, which was left as it was. */
  ROLLOUT_STOPPED: 'rollout-stopped',
} as const;

export type OutcomeName = (typeof OUTCOME)[keyof typeof OUTCOME];

export type PhaseName = 'queued' | 'verify' | 'build' | 'plan' | 'preflight' | 'upload' | 'reboot' | 'health' | 'promote' | 'rollback' | 'notify';

export interface Phase {
  name: PhaseName;
  start: string;
  end?: string;
}

export interface ReconcileRecord {
  id: string;
  commit: string;
  author?: string;
  subject?: string;
  trigger: Trigger;
  /** When the trigger noticed the commit. */
  noticedAt: string;
  startedAt?: string;
  endedAt?: string;
  phases: Phase[];
  state: 'running' | 'done';
  outcome?: OutcomeName;
  /** The machine-readable reason: one of REASON (deploy/verdict.ts), deploy's or the controller's. */
  reason?: Reason;
  message?: string;
  /** A failed health check's name and output, a build's last lines. */
  output?: string;
  buildId?: string;
  bytesSent?: number;
  imageBytes?: number;
  refresh?: boolean;
  /** The branch was rewritten: this commit does not descend from the one that ran before. */
  rewritten?: { from: string };
  /** The plan of this build against the one running before it (`ramboot plan`). */
  plan?: RecordedPlan;
}

/** A plan as the controller keeps it: the text the page shows and the JSON the API serves. */
export interface RecordedPlan {
  /** The build it was compared against: the one the machine ran when this build was made. */
  against: string;
  changes: number;
  text: string;
  json: Plan;
}

export class History {
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly keep: number,
  ) {
    this.dir = join(stateDir, 'history');
    makePrivateDir(this.dir);
  }

  /** Ids sort by time: "<UTC timestamp>-<random>". */
  newId(): string {
    return `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
  }

  save(r: ReconcileRecord): void {
    writePrivateFile(join(this.dir, `${r.id}.json`), `${JSON.stringify(r, null, 2)}\n`);
  }

  /** Appends one event to the reconcile's log. */
  log(id: string, event: unknown): void {
    appendPrivateFile(join(this.dir, `${id}.log`), `${JSON.stringify({ ts: new Date().toISOString(), ...(event as object) })}\n`);
  }

  get(id: string): ReconcileRecord | undefined {
    if (!/^[0-9A-Za-z-]+$/.test(id)) return undefined;
    const file = join(this.dir, `${id}.json`);
    return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as ReconcileRecord) : undefined;
  }

  /** The reconcile's log as written (JSON lines), for logEvents or to be served raw. */
  logOf(id: string): string | undefined {
    if (!/^[0-9A-Za-z-]+$/.test(id)) return undefined;
    const file = join(this.dir, `${id}.log`);
    return existsSync(file) ? readFileSync(file, 'utf8') : this.get(id) ? '' : undefined;
  }

  /** Newest first. */
  list(limit = this.keep): ReconcileRecord[] {
    return this.ids()
      .reverse()
      .slice(0, limit)
      .map((id) => this.get(id)!)
      .filter(Boolean);
  }

  /** Drops the oldest records beyond the configured count. */
  prune(): void {
    const ids = this.ids();
    for (const id of ids.slice(0, Math.max(0, ids.length - this.keep))) {
      rmSync(join(this.dir, `${id}.json`), { force: true });
      rmSync(join(this.dir, `${id}.log`), { force: true });
    }
  }

  /** The records' ids, oldest first. */
  ids(): string[] {
    return readdirSync(this.dir)
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .sort();
  }
}

/** The events of a log as logOf returns it, oldest first; a line that is not JSON (one a crash cut) is left out. */
export function logEvents<E>(log: string): (E & { ts?: string })[] {
  const events: (E & { ts?: string })[] = [];
  for (const line of log.split('\n')) {
    try {
      events.push(JSON.parse(line) as E & { ts?: string });
    } catch {
      // An empty line, or one cut by a crash.
    }
  }
  return events;
}
