import { describe, expect, it } from 'vitest';
import { backoffMs, type Backoff } from '../../lib/backoff.js';

const schedule = (b: Backoff, n: number) => Array.from({ length: n }, (_, i) => backoffMs(i + 1, b));

describe('backoffMs', () => {
  it('grows by a factor from the first wait, up to the cap', () => {
    expect(schedule({ firstMs: 2_000, maxMs: 5 * 60_000, factor: 3 }, 7)).toEqual([2_000, 6_000, 18_000, 54_000, 162_000, 300_000, 300_000]);
    expect(schedule({ firstMs: 30_000, maxMs: 10 * 60_000, factor: 2 }, 7)).toEqual([30_000, 60_000, 120_000, 240_000, 480_000, 600_000, 600_000]);
  });

  it('grows by a step from the first wait, up to the cap', () => {
    expect(schedule({ firstMs: 5_000, maxMs: 60_000, stepMs: 5_000 }, 14)).toEqual([5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000, 45_000, 50_000, 55_000, 60_000, 60_000, 60_000]);
    expect(schedule({ firstMs: 1_000, maxMs: 10_000, stepMs: 4_000 }, 4)).toEqual([1_000, 5_000, 9_000, 10_000]);
  });

  it('a first wait above the cap is the cap', () => {
    expect(backoffMs(1, { firstMs: 50, maxMs: 20, factor: 2 })).toBe(20);
  });
});
