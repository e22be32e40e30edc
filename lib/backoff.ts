// How long to wait before trying again, one formula for every retry of the project: the
// n-th wait grows from `firstMs`, by a factor (exponential) or by a step (linear), and
// never exceeds `maxMs`. Deterministic: tests and the README can state a schedule.

export type Backoff = { firstMs: number; maxMs: number } & (
  /** Each wait is the one before times `factor`. */
  | { factor: number; stepMs?: never }
  /** Each wait is the one before plus `stepMs`. */
  | { stepMs: number; factor?: never }
);

/** The wait after failed attempt `attempt` (1 for the first failure). */
export function backoffMs(attempt: number, b: Backoff): number {
  const n = attempt - 1;
  const grown = b.factor !== undefined ? b.firstMs * b.factor ** n : b.firstMs + b.stepMs * n;
  return Math.min(grown, b.maxMs);
}
