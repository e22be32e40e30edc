import type { HealthCheck } from '../lib/config-schema.js';
import type { DeploySettings, Manifest } from '../image/manifest.js';

// What ramboot.yaml says about deploying (host, boot medium, trial, health checks), as
// each image carries it, and the kernel with its command line: compared key by key.

export interface ValueChange {
  /** "trial.confirm_timeout", "health.checks[\"web\"].timeout", "kernel". */
  key: string;
  /** Absent: the key was not set (or the check did not exist). */
  before?: string;
  after?: string;
}

/** Keys whose values are durations in milliseconds. */
const DURATIONS = new Set(['confirm_timeout', 'reboot_deadline', 'deadline', 'period', 'timeout']);

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

function value(key: string, v: unknown): string {
  if (typeof v === 'number' && DURATIONS.has(key)) return formatDuration(v);
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function checkSummary(c: HealthCheck): string {
  const what = c.cmd !== undefined ? `cmd ${c.cmd}` : `http ${c.http} (status ${c.status}${c.body !== undefined ? `, body ${JSON.stringify(c.body)}` : ''})`;
  return `${what}, period ${formatDuration(c.period)}, timeout ${formatDuration(c.timeout)}, retries ${c.retries}`;
}

/** "section.key" → value, for the flat parts of the settings; the command line is the kernel's. */
function flat(s: DeploySettings): Map<string, string> {
  const out = new Map<string, string>();
  const put = (section: string, obj: Record<string, unknown>, skip: string[] = []) => {
    for (const [k, v] of Object.entries(obj)) if (v !== undefined && !skip.includes(k)) out.set(`${section}.${k}`, value(k, v));
  };
  put('host', s.host);
  // Images built before UEFI support have no boot.firmware: they were BIOS.
  put('boot', { ...s.boot, firmware: s.boot.firmware ?? 'bios' }, ['append']);
  put('trial', s.trial);
  put('health', s.health, ['checks']);
  return out;
}

function changes(a: Map<string, string>, b: Map<string, string>): ValueChange[] {
  const out: ValueChange[] = [];
  for (const key of [...new Set([...a.keys(), ...b.keys()])]) {
    const before = a.get(key);
    const after = b.get(key);
    if (before !== after) out.push({ key, ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}) });
  }
  return out;
}

function checkChanges(a: HealthCheck[], b: HealthCheck[]): ValueChange[] {
  const byName = (cs: HealthCheck[]) => new Map(cs.map((c) => [c.name, c]));
  const [x, y] = [byName(a), byName(b)];
  const out: ValueChange[] = [];
  for (const name of [...new Set([...x.keys(), ...y.keys()])]) {
    const key = `health.checks[${JSON.stringify(name)}]`;
    const before = x.get(name);
    const after = y.get(name);
    if (!before) out.push({ key, after: checkSummary(after!) });
    else if (!after) out.push({ key, before: checkSummary(before) });
    else {
      const fields = (c: HealthCheck) => new Map(Object.entries(c).filter(([k, v]) => k !== 'name' && v !== undefined).map(([k, v]) => [`${key}.${k}`, value(k, v)]));
      out.push(...changes(fields(before), fields(after)));
    }
  }
  return out;
}

/** The deploy settings that differ: host, boot medium, trial timings, health checks, the medium's volume id. */
export function compareSettings(a: Manifest, b: Manifest): ValueChange[] {
  const medium = (m: Manifest) => new Map(m.medium?.uuid ? [['boot.medium volume id (fstab)', m.medium.uuid]] : []);
  // Images from before sealed secrets kept them on the medium.
  const atRest = (m: Manifest) =>
    new Map([['secrets.at_rest', m.sealed ? 'tpm' : 'medium'], ...(m.sealed ? [['secrets sealed to (TPM recipient)', m.sealed.recipients[0]!] as [string, string]] : [])]);
  return [
    ...changes(flat(a.settings), flat(b.settings)),
    ...checkChanges(a.settings.health.checks, b.settings.health.checks),
    ...changes(medium(a), medium(b)),
    ...changes(atRest(a), atRest(b)),
  ];
}

function kernelText(k: Manifest['kernel']): string {
  return `${k.version ?? 'kernel'} (sha256 ${k.sha256.slice(0, 12)}, ${k.bytes} bytes)`;
}

/** The kernel (its file name, or its bytes under the same name), the microcode, the user's part of the command line. */
export function compareKernel(a: Manifest, b: Manifest): ValueChange[] {
  const out: ValueChange[] = [];
  if (a.kernel.version !== b.kernel.version) out.push({ key: 'kernel', before: a.kernel.version ?? '(unknown)', after: b.kernel.version ?? '(unknown)' });
  else if (a.kernel.sha256 !== b.kernel.sha256) out.push({ key: 'kernel image', before: kernelText(a.kernel), after: kernelText(b.kernel) });
  if (a.ucode?.sha256 !== b.ucode?.sha256) {
    out.push({ key: 'microcode', ...(a.ucode ? { before: `sha256 ${a.ucode.sha256.slice(0, 12)}` } : {}), ...(b.ucode ? { after: `sha256 ${b.ucode.sha256.slice(0, 12)}` } : {}) });
  }
  if (a.append !== b.append) out.push({ key: 'command line', before: a.append, after: b.append });
  return out;
}
