import { describe, expect, it } from 'vitest';
import { MachineProbe } from '../../controller/page/probe.js';

// The page's MACHINE panel: facts are asked for at most once a minute, but never shown
// once a promotion came after them (they would name the build before it while the
// history says the new one runs), and a promotion makes the next look ask at once.
// The machine here is a stand-in: `reach` answers without SSH, counting the asks.

function probe() {
  const state = { promoted: 'build-a' as string | undefined, asks: 0, busy: false };
  const p = new MachineProbe({
    reach: async () => `asked while ${state.promoted} ran (${++state.asks})`,
    busy: () => state.busy,
    promoted: () => state.promoted,
    everyMs: 60_000,
  });
  return { p, state };
}

describe('the machine probe (a stand-in machine)', () => {
  it('asks at most once a minute while nothing is promoted', async () => {
    const { p, state } = probe();
    expect(p.get()).toBeUndefined();
    await p.settled();
    expect(p.get()?.error).toBe('asked while build-a ran (1)');
    await p.settled();
    p.get();
    expect(state.asks).toBe(1);
  });

  it('hides facts read before a promotion and asks again at once', async () => {
    const { p, state } = probe();
    p.get();
    await p.settled();
    state.promoted = 'build-b';
    expect(p.get()).toBeUndefined();
    expect(p.probing).toBe(true);
    await p.settled();
    expect(p.get()?.error).toBe('asked while build-b ran (2)');
  });

  it('does not ask while a deploy owns the machine, and keeps the stale facts hidden', async () => {
    const { p, state } = probe();
    p.get();
    await p.settled();
    state.busy = true;
    state.promoted = 'build-b';
    expect(p.get()).toBeUndefined();
    expect(p.probing).toBe(false);
    expect(state.asks).toBe(1);
  });
});
