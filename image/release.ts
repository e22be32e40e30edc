// /etc/ramboot-release: what the running machine reports as its build. The build writes
// it (renderRelease), deploy and the controller read it back over SSH (parseRelease).

export interface Release {
  commit?: string;
  buildId: string;
  /** Seconds since the epoch; the source time, so the same inputs give the same bytes. */
  time: number;
}

export const RELEASE_FILE = '/etc/ramboot-release';

export function renderRelease(r: Release): string {
  return [`build=${r.buildId}`, `commit=${r.commit ?? 'none'}`, `built=${new Date(r.time * 1000).toISOString()}`, ''].join('\n');
}

/** key=value lines; surrounding blanks and double quotes are dropped, other lines ignored. */
export function parseRelease(text: string): { build?: string; commit?: string; built?: string } {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"?(.*?)"?\s*$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return { build: out.build, commit: out.commit === 'none' ? undefined : out.commit, built: out.built };
}
