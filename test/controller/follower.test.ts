import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AnyEvent } from '../../controller/controller.js';
import { Follower } from '../../controller/follower.js';
import { Queue, type Request } from '../../controller/queue.js';
import { localRepo } from '../../controller/repo.js';
import { tempDir } from '../helpers/ramboot.js';

// What the one-machine controller and the fleet share (controller/follower.ts): a commit
// that meets a fault is tried again later with a backoff that grows while the same commit
// keeps failing, and any other commit noticed meanwhile cancels the retry. Timers are
// vitest's fake ones; the queue is the real one.

/** A follower whose work is to fail every commit, asking for a retry each time. */
class Failing extends Follower {
  readonly tried: Request[] = [];
  readonly events: AnyEvent[] = [];
  protected readonly queue = new Queue(
    async (r) => {
      this.tried.push(r);
      if (r.commit !== 'good') this.retryAfter(r, this.nextAttempt(r.commit), 'unreachable');
    },
    () => {},
    () => {},
  );

  constructor() {
    const repo = tempDir('follower');
    execFileSync('git', ['init', '-q', repo]);
    super(localRepo(repo, 'main'), tempDir('follower-state'));
  }

  protected quarantined(): boolean {
    return false;
  }

  protected publish(event: AnyEvent): void {
    this.events.push(event);
  }

  next(): { commit: string; at: string; attempt: number } | undefined {
    return this.retry;
  }
}

describe('trying a commit again after a fault', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('waits 30 s, then 60 s, then 120 s while the same commit fails, each time noticed again with its attempt', async () => {
    vi.useFakeTimers();
    const f = new Failing();
    f.notice('abc', { kind: 'poll' });
    await f.drained();
    const waits: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = f.next()!;
      waits.push(Date.parse(r.at) - Date.now());
      await vi.advanceTimersByTimeAsync(Date.parse(r.at) - Date.now());
      await f.drained();
    }
    expect(waits).toEqual([30_000, 60_000, 120_000]);
    expect(f.tried.map((r) => r.trigger)).toEqual([{ kind: 'poll' }, { kind: 'retry', detail: 'attempt 2' }, { kind: 'retry', detail: 'attempt 3' }, { kind: 'retry', detail: 'attempt 4' }]);
  });

  it('another commit noticed cancels the retry, and its own first retry waits 30 s again', async () => {
    vi.useFakeTimers();
    const f = new Failing();
    f.notice('abc', { kind: 'poll' });
    await f.drained();
    await vi.advanceTimersByTimeAsync(30_000);
    await f.drained();
    expect(f.next()).toMatchObject({ commit: 'abc', attempt: 2 });
    f.notice('def', { kind: 'poll' });
    await f.drained();
    expect(f.next()).toMatchObject({ commit: 'def', attempt: 1 });
    expect(Date.parse(f.next()!.at) - Date.now()).toBe(30_000);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(f.tried.filter((r) => r.commit === 'abc')).toHaveLength(2);
  });
});
