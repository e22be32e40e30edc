/** Durations in ramboot.yaml: a number of seconds or a string such as "90s", "5m", "1h". */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return value >= 0 ? value * 1000 : undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(value.trim());
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's']!;
  return Number(m[1]) * unit;
}
