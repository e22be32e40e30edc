import { backoffMs } from '../../lib/backoff.js';
import { describe } from '../../lib/errors.js';
import { describeFetchError } from '../../lib/net.js';
import type { Notice, NoticeEvent } from './notice.js';
import { readSecret, secretSource, type Target, type TargetKind } from './target.js';

// Delivers notices to targets: one queue per target so that a commit's statuses arrive
// in order, each delivery retried with exponential backoff on network faults, 5xx and
// 429, and given up on other answers (a wrong token, an unknown repository: retrying
// changes nothing). A "started" notice still being retried is dropped once the verdict
// of the same reconcile is queued behind it. Nothing here throws to the caller or makes
// it wait: a deploy never depends on a notification. What happened is kept in memory
// for the status page and the metrics.

export interface RetryPolicy {
  /** Tries in all, the first included. */
  attempts: number;
  firstMs: number;
  maxMs: number;
  /** For one request, answer included. */
  timeoutMs: number;
}

/** Each wait three times the one before. */
const RETRY_FACTOR = 3;
/** 2 s, 6 s, 18 s, 54 s, 162 s: a forge that restarts or a phone server that blips is waited for, ~4 min in all. */
const DEFAULT_RETRY: RetryPolicy = { attempts: 6, firstMs: 2_000, maxMs: 5 * 60_000, timeoutMs: 10_000 };

export type DeliveryResult = 'delivered' | 'unchanged' | 'identical' | 'failed' | 'dropped';

export interface Attempted {
  event: NoticeEvent;
  commit: string;
  reconcile: string;
  state: Notice['state'];
  at: string;
  result: DeliveryResult;
  attempts: number;
  /** The HTTP status of the last answer, if there was one. */
  status?: number;
  error?: string;
}

export interface DeliveryState {
  kind: TargetKind;
  where: string;
  /** Where its secret comes from (a path or a variable name, never the value). */
  secretFrom?: string;
  queued: number;
  /** The delivery being retried now. */
  retrying?: { event: NoticeEvent; commit: string; attempt: number; next: string; error: string };
  last?: Attempted;
  lastFailure?: Attempted;
  counts: Record<DeliveryResult, number>;
}

interface Lane {
  target: Target;
  queue: Notice[];
  state: DeliveryState;
  /** What was last posted per commit (commit statuses): state and description. */
  posted: Map<string, string>;
  running?: Promise<void>;
}

/** Commit statuses remembered per target, to recognise an identical one. */
const POSTED_KEPT = 500;
/** Of an error answer's body, what is kept for the page. */
const BODY_KEPT = 200;

export class Dispatcher {
  private readonly lanes = new Map<string, Lane>();

  constructor(
    private readonly policy: RetryPolicy = DEFAULT_RETRY,
    private readonly onResult: (target: Target, a: Attempted) => void = () => {},
  ) {}

  /** Queues a notice for a target; returns at once. */
  send(target: Target, n: Notice): void {
    const lane = this.lane(target);
    lane.queue.push(n);
    lane.state.queued = lane.queue.length;
    lane.running ??= this.drain(lane).finally(() => (lane.running = undefined));
  }

  state(): DeliveryState[] {
    return [...this.lanes.values()].map((l) => structuredClone(l.state));
  }

  /** Resolves when every queue is empty (tests, and a clean stop). */
  async idle(): Promise<void> {
    while ([...this.lanes.values()].some((l) => l.running)) await Promise.all([...this.lanes.values()].map((l) => l.running));
  }

  private lane(target: Target): Lane {
    const key = `${target.kind} ${target.where}`;
    let lane = this.lanes.get(key);
    if (!lane) {
      const counts = { delivered: 0, unchanged: 0, identical: 0, failed: 0, dropped: 0 };
      lane = { target, queue: [], posted: new Map(), state: { kind: target.kind, where: target.where, queued: 0, counts } };
      this.lanes.set(key, lane);
    }
    // The newest configuration wins (a token file moved to another path).
    lane.target = target;
    lane.state.secretFrom = target.secret && secretSource(target.secret);
    return lane;
  }

  private async drain(lane: Lane): Promise<void> {
    for (let n = lane.queue[0]; n; n = lane.queue[0]) {
      const attempted = await this.deliver(lane, n);
      lane.queue.shift();
      lane.state.queued = lane.queue.length;
      lane.state.retrying = undefined;
      lane.state.last = attempted;
      if (attempted.result === 'failed') lane.state.lastFailure = attempted;
      lane.state.counts[attempted.result]++;
      this.onResult(lane.target, attempted);
    }
  }

  private async deliver(lane: Lane, n: Notice): Promise<Attempted> {
    const t = lane.target;
    const done = (result: DeliveryResult, attempts: number, extra: { status?: number; error?: string } = {}): Attempted => ({
      event: n.event,
      commit: n.commit,
      reconcile: n.reconcile,
      state: n.state,
      at: new Date().toISOString(),
      result,
      attempts,
      ...extra,
    });
    const fingerprint = `${n.state}\n${n.description}`;
    if (t.status && lane.posted.get(n.commit) === fingerprint) return done('identical', 0);
    for (let attempt = 1; ; attempt++) {
      const r = await this.attempt(t, n);
      if (r.ok) {
        if (t.status) remember(lane.posted, n.commit, fingerprint);
        return done(r.unchanged ? 'unchanged' : 'delivered', attempt, { status: r.status });
      }
      if (!r.retry || attempt >= this.policy.attempts) return done('failed', attempt, { status: r.status, error: r.error });
      const delay = backoffMs(attempt, { firstMs: this.policy.firstMs, maxMs: this.policy.maxMs, factor: RETRY_FACTOR });
      lane.state.retrying = { event: n.event, commit: n.commit, attempt, next: new Date(Date.now() + delay).toISOString(), error: r.error };
      await sleep(delay);
      if (n.event === 'started' && lane.queue.some((q) => q.reconcile === n.reconcile && q.event === 'verdict')) {
        return done('dropped', attempt, { status: r.status, error: `${r.error}; dropped: the verdict is queued` });
      }
    }
  }

  private async attempt(t: Target, n: Notice): Promise<{ ok: true; status: number; unchanged?: boolean } | { ok: false; retry: boolean; status?: number; error: string }> {
    let secret: string | undefined;
    try {
      secret = readSecret(t);
    } catch (err) {
      // A missing token file may appear (a secret mounted late): worth another try.
      return { ok: false, retry: true, error: describe(err) };
    }
    const req = t.request(n, secret);
    const scrub = (text: string) => (secret ? text.split(secret).join('[redacted]') : text);
    const host = hostOf(req.url);
    let res: Response;
    let body: string;
    try {
      res = await fetch(req.url, { method: 'POST', headers: req.headers, body: req.body, signal: AbortSignal.timeout(this.policy.timeoutMs), redirect: 'error' });
      body = await res.text();
    } catch (err) {
      return { ok: false, retry: true, error: scrub(`failed to reach ${host}: ${describeFetchError(err)}`) };
    }
    if (res.ok) return { ok: true, status: res.status };
    if (t.unchanged?.(res.status, body)) return { ok: true, status: res.status, unchanged: true };
    const retry = res.status >= 500 || res.status === 429 || res.status === 408;
    const said = body.replace(/\s+/g, ' ').trim().slice(0, BODY_KEPT);
    return { ok: false, retry, status: res.status, error: scrub(`${host} answered HTTP ${res.status}${said ? `: ${said}` : ''}${retry ? '' : hint(res.status, t)}`) };
  }
}

/** What to check, for answers that retrying does not change. */
function hint(status: number, t: Target): string {
  if (status === 401 || status === 403) return ` (is the token in ${t.secret ? secretSource(t.secret) : 'notify.' + t.kind} valid${t.status ? ', and allowed to set commit statuses' : ''}?)`;
  if (status === 404) return t.status ? ` (is the repository or project in notify.${t.kind} right?)` : ` (is the URL in notify.${t.kind} right?)`;
  return '';
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function remember(posted: Map<string, string>, commit: string, fingerprint: string): void {
  posted.delete(commit);
  posted.set(commit, fingerprint);
  if (posted.size > POSTED_KEPT) posted.delete(posted.keys().next().value!);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
