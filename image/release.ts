// /etc/ramboot-release: what the running machine reports as its build (deploy reads build=).

export interface Release {
  commit?: string;
  buildId: string;
  /** Seconds since the epoch; the source time, so the same inputs give the same bytes. */
  time: number;
}

export function renderRelease(r: Release): string {
  return [`build=${r.buildId}`, `commit=${r.commit ?? 'none'}`, `built=${new Date(r.time * 1000).toISOString()}`, ''].join('\n');
}

export function parseRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}
