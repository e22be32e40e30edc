import { describe, expect, it } from 'vitest';
import { Queue, type Request } from '../../controller/queue.js';

// The single-flight queue every trigger feeds: one reconcile at a time, the newest
// pending request wins, the ones it replaces are reported as superseded.

const req = (commit: string, extra: Partial<Request> = {}): Request => ({ commit, trigger: { kind: 'poll' }, at: new Date().toISOString(), ...extra });

/** A queue whose work waits until the test lets each request finish. */
function harness() {
  const ran: string[] = [];
  const superseded: [string, string][] = [];
  const crashed: string[] = [];
  const gates = new Map<string, () => void>();
  let active = 0;
  let maxActive = 0;
  const q = new Queue(
    async (r) => {
      active++;
      maxActive = Math.max(maxActive, active);
      ran.push(r.commit);
      await new Promise<void>((resolve) => gates.set(r.commit, resolve));
      active--;
      if (r.commit.startsWith('crash')) throw new Error('boom');
    },
    (a, b) => superseded.push([a.commit, b.commit]),
    (r) => crashed.push(r.commit),
  );
  const finish = async (commit: string) => {
    while (!gates.has(commit)) await new Promise((r) => setTimeout(r, 1));
    gates.get(commit)!();
    gates.delete(commit);
    await new Promise((r) => setTimeout(r, 1));
  };
  return { q, ran, superseded, crashed, finish, maxActive: () => maxActive };
}

describe('the reconcile queue', () => {
  it('runs one request at a time and keeps only the newest pending one', async () => {
    const h = harness();
    expect(h.q.submit(req('a'))).toBe('started');
    expect(h.q.submit(req('b'))).toBe('pending');
    expect(h.q.submit(req('c'))).toBe('pending');
    expect(h.q.submit(req('d'))).toBe('pending');
    expect(h.superseded).toEqual([['b', 'c'], ['c', 'd']]);
    await h.finish('a');
    await h.finish('d');
    await h.q.drained();
    expect(h.ran).toEqual(['a', 'd']);
    expect(h.maxActive()).toBe(1);
  });

  it('ignores the commit that is already running, or already waiting', async () => {
    const h = harness();
    h.q.submit(req('a'));
    expect(h.q.submit(req('a'))).toBe('duplicate');
    h.q.submit(req('b'));
    expect(h.q.submit(req('b'))).toBe('duplicate');
    expect(h.superseded).toEqual([]);
    await h.finish('a');
    await h.finish('b');
    await h.q.drained();
    expect(h.ran).toEqual(['a', 'b']);
  });

  it('queues the running commit again when forced (a release) or refreshed', async () => {
    const h = harness();
    h.q.submit(req('a'));
    expect(h.q.submit(req('a', { force: true }))).toBe('pending');
    await h.finish('a');
    await h.finish('a');
    await h.q.drained();
    expect(h.ran).toEqual(['a', 'a']);
  });

  it('reports a request whose work throws and goes on with the pending one', async () => {
    const h = harness();
    h.q.submit(req('crash-1'));
    h.q.submit(req('b'));
    await h.finish('crash-1');
    await h.finish('b');
    await h.q.drained();
    expect(h.crashed).toEqual(['crash-1']);
    expect(h.ran).toEqual(['crash-1', 'b']);
    expect(h.q.running).toBeUndefined();
  });
});
