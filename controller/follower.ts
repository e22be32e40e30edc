import { backoffMs, type Backoff } from '../lib/backoff.js';
import { describe } from '../lib/errors.js';
import type { AnyEvent, Envelope } from './controller.js';
import { loadPersisted, savePersisted, type Persisted } from './persisted.js';
import type { Queue, Request, Submitted, Trigger } from './queue.js';
import type { Repo } from './repo.js';

// What the controller of one machine (controller.ts) and of several (fleet.ts) share:
// following a branch into one queue of commits, pausing, and trying a commit again later
// after a fault, with backoff. What a queued commit becomes (a reconcile, a rollout) and
// what counts as quarantined are theirs.

export type Desired = { commit: string; subject?: string; author?: string };

/** A commit (or a site's image) that met an unreachable mirror, registry or machine: tried again after 30 s, 1, 2, 4, 8 min, then every 10 min. */
export const RETRY_BACKOFF: Backoff = { firstMs: 30_000, maxMs: 10 * 60_000, factor: 2 };

export abstract class Follower {
  protected readonly subscribers = new Set<(e: Envelope) => void>();
  protected persisted: Persisted;
  protected readonly startedAt = new Date().toISOString();
  protected desired?: Desired;
  protected retry?: { commit: string; at: string; attempt: number; reason: string; timer: NodeJS.Timeout };
  /** How many times in a row this commit was to be tried again: the backoff's step (the retry timer clears `retry`). */
  protected retried?: { commit: string; attempt: number };
  protected stopping = false;
  protected abstract readonly queue: Queue;

  constructor(
    protected readonly repo: Repo,
    private readonly stateDir: string,
  ) {
    this.persisted = loadPersisted(stateDir);
  }

  /** Whether a person must release the commit before it is tried again. */
  protected abstract quarantined(commit: string): boolean;
  protected abstract publish(event: AnyEvent): void;

  subscribe(fn: (e: Envelope) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** A commit some trigger saw. Quarantined commits are not queued unless forced. */
  notice(commit: string, trigger: Trigger, opts: { refresh?: boolean; force?: boolean } = {}): Submitted | 'quarantined' | 'paused' {
    let result: Submitted | 'quarantined' | 'paused';
    if (!opts.force && !opts.refresh && this.quarantined(commit)) result = 'quarantined';
    else if (this.persisted.paused && !opts.force) result = 'paused';
    else {
      if (this.retry && (this.retry.commit !== commit || trigger.kind !== 'retry')) this.cancelRetry();
      result = this.queue.submit({ commit, trigger, at: new Date().toISOString(), refresh: opts.refresh, force: opts.force });
    }
    this.publish({ kind: 'noticed', source: 'controller', commit, trigger, queued: result });
    return result;
  }

  /**
   * Asks the repository where the branch is; a new commit (or any, when `always`) is
   * queued. Errors are recorded in status and returned, never thrown: a poll that fails
   * is tried again at the next one.
   */
  async poll(trigger: Trigger, always = false): Promise<{ commit?: string; queued?: ReturnType<Follower['notice']>; error?: string }> {
    const look = await lookAtBranch(this.repo, this.desired, (lastPoll) => this.persist({ lastPoll }), (message) => this.publish({ kind: 'warn', source: 'controller', message }));
    if (!look.commit) return { error: look.error };
    this.desired = look.desired;
    if (!look.changed && !always) return { commit: look.commit };
    return { commit: look.commit, queued: this.notice(look.commit, trigger) };
  }

  recordWebhook(w: NonNullable<Persisted['lastWebhook']>): void {
    this.persist({ lastWebhook: w });
  }

  setPaused(paused: boolean): void {
    this.persist({ paused });
    this.publish({ kind: 'stage', source: 'controller', message: paused ? 'automatic deploys paused' : 'automatic deploys resumed' });
    if (!paused && this.desired) this.notice(this.desired.commit, { kind: 'manual', detail: 'resumed' });
  }

  drained(): Promise<void> {
    return this.queue.drained();
  }

  /** The next try of a commit after a fault: its number in a row, and when (with backoff). */
  protected nextAttempt(commit: string): { attempt: number; delay: number } {
    const attempt = (this.retried?.commit === commit ? this.retried.attempt : 0) + 1;
    this.retried = { commit, attempt };
    return { attempt, delay: backoffMs(attempt, RETRY_BACKOFF) };
  }

  /** Notices the commit again after the delay, unless another commit is noticed first. */
  protected retryAfter(req: Request, next: { attempt: number; delay: number }, reason: string): void {
    this.cancelRetry();
    const timer = setTimeout(() => {
      this.retry = undefined;
      this.notice(req.commit, { kind: 'retry', detail: `attempt ${next.attempt + 1}` }, { refresh: req.refresh, force: req.force });
    }, next.delay);
    timer.unref();
    this.retry = { commit: req.commit, at: new Date(Date.now() + next.delay).toISOString(), attempt: next.attempt, reason, timer };
  }

  protected cancelRetry(): void {
    if (this.retry) clearTimeout(this.retry.timer);
    this.retry = undefined;
  }

  protected persist(p: Partial<Persisted>): void {
    this.persisted = { ...this.persisted, ...p };
    savePersisted(this.stateDir, this.persisted);
  }
}

/**
 * One look at where the branch is (a poll): the look recorded (lastPoll), a failure said
 * and returned (never thrown: the next poll tries again), the commit's subject and author
 * read when it is new.
 */
export async function lookAtBranch(
  repo: Repo,
  desired: Desired | undefined,
  record: (lastPoll: NonNullable<Persisted['lastPoll']>) => void,
  warn: (message: string) => void,
): Promise<{ commit?: string; error?: string; desired?: Desired; changed?: boolean }> {
  const at = new Date().toISOString();
  let commit: string;
  try {
    commit = await repo.head();
  } catch (err) {
    const error = describe(err);
    record({ at, ok: false, error });
    warn(error);
    return { error };
  }
  record({ at, ok: true, commit });
  if (desired?.commit === commit) return { commit, desired, changed: false };
  const info = await repo.info(commit).catch(() => undefined);
  return { commit, desired: { commit, subject: info?.subject, author: info?.author }, changed: true };
}
