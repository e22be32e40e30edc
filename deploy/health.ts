import type { HealthCheck } from '../lib/config-schema.js';
import { describe as describeError } from '../lib/errors.js';
import { connect, shq, type Session, type Target } from './ssh.js';

// Health of a trial boot (docs/ARCHITECTURE.md, "Deploy"): built-in checks first (a fresh
// SSH connection works; every service of the default runlevel started), then the repo's
// checks in the order written, then the services once more, once they had time to
// settle (none crashed since). Checks run one after another and the first that fails
// ends the run: its name and output are what the verdict shows.

export interface CheckResult {
  name: string;
  ok: boolean;
  attempts: number;
  /** The output of the last attempt: command output, HTTP status and body, or the error. */
  output: string;
  ms: number;
}

export interface HealthReport {
  ok: boolean;
  results: CheckResult[];
  failed?: CheckResult;
}

export interface HealthEvent {
  check: string;
  attempt: number;
  of: number;
  ok: boolean;
  output: string;
}

interface Attempt {
  ok: boolean;
  output: string;
}

/** A check as the runner sees it: one attempt, and how often and how long to try. */
export interface Probe {
  name: string;
  period: number;
  timeout: number;
  retries: number;
  attempt(timeoutMs: number): Promise<Attempt>;
}

export const BUILTIN_SSH = 'ssh';
export const BUILTIN_SERVICES = 'services';
export const BUILTIN_SETTLED = 'services, settled';
/** Services may still be starting when SSH first answers: the built-ins retry for about half a minute. */
const BUILTIN_TIMING = { period: 5_000, timeout: 30_000, retries: 6 };
const OUTPUT_LIMIT = 4_000;
export const DEFAULT_RUNLEVEL_DIR = '/etc/runlevels/default';

/**
 * Lists every service of the runlevel that is not started, with its state; exits 1 if
 * there is one. `rc-service <name> status` exits 0 only for a started service, on
 * Alpine and Debian alike.
 */
export function servicesScript(runlevelDir = DEFAULT_RUNLEVEL_DIR): string {
  return [
    `command -v rc-service >/dev/null || { echo 'rc-service not found: the image does not run openrc'; exit 1; }`,
    'bad=0',
    `for f in ${shq(runlevelDir)}/*; do`,
    '  [ -e "$f" ] || continue',
    '  s=${f##*/}',
    '  out=$(rc-service "$s" status 2>&1) && continue',
    '  state=$(printf "%s\\n" "$out" | sed -n "s/.*status: *//p" | head -n 1)',
    '  echo "$s: ${state:-$out}"',
    '  bad=1',
    'done',
    'exit $bad',
  ].join('\n');
}

export interface HealthOptions {
  target: Target;
  checks: HealthCheck[];
  deadlineMs: number;
  /** The last look at the services comes no sooner than this after the first one passed. */
  settleMs?: number;
  onAttempt?: (e: HealthEvent) => void;
  /** The runlevel the services check covers. */
  runlevelDir?: string;
}

/** Runs the built-in checks and then the repo's, all within the deadline. */
export async function runHealth(opts: HealthOptions): Promise<HealthReport> {
  let session: Session | undefined;
  // The ssh check opens the fresh connection the others reuse; a lost one is reopened.
  let servicesUp: number | undefined;
  const sessionFor = async (timeoutMs: number): Promise<Session> => {
    if (!session || session.isClosed) session = await connect(opts.target, timeoutMs);
    return session;
  };
  const probes: Probe[] = [
    {
      name: BUILTIN_SSH,
      ...BUILTIN_TIMING,
      async attempt(timeoutMs) {
        session?.close();
        session = await connect(opts.target, timeoutMs);
        const r = await session.exec('true', { timeoutMs });
        return { ok: r.code === 0, output: r.code === 0 ? 'a fresh SSH connection works' : `\`true\` exited with ${r.code}` };
      },
    },
    {
      name: BUILTIN_SERVICES,
      ...BUILTIN_TIMING,
      async attempt(timeoutMs) {
        const r = await cmdAttempt(sessionFor, servicesScript(opts.runlevelDir), timeoutMs);
        if (r.ok) servicesUp ??= Date.now();
        return r;
      },
    },
    ...opts.checks.map((c): Probe => ({
      name: c.name,
      period: c.period,
      timeout: c.timeout,
      retries: c.retries,
      attempt: c.cmd !== undefined ? (t) => cmdAttempt(sessionFor, c.cmd!, t) : (t) => httpAttempt(c, t),
    })),
    {
      // A service that starts and dies a few seconds later passed the first look.
      name: BUILTIN_SETTLED,
      period: 0,
      timeout: (opts.settleMs ?? 0) + BUILTIN_TIMING.timeout,
      retries: 0,
      async attempt(timeoutMs) {
        const wait = (servicesUp ?? Date.now()) + (opts.settleMs ?? 0) - Date.now();
        if (wait > 0) await sleep(wait);
        return cmdAttempt(sessionFor, servicesScript(opts.runlevelDir), timeoutMs);
      },
    },
  ];
  try {
    return await runProbes(probes, opts.deadlineMs, opts.onAttempt);
  } finally {
    session?.close();
  }
}

/**
 * An attempt is started only with at least this much of the deadline left (or its whole
 * timeout, if shorter): one started with a millisecond left can only fail, and its
 * "no answer" would hide what the check last saw.
 */
export const MIN_ATTEMPT_MS = 2_000;

/** Runs probes in order, each up to retries+1 times `period` apart; stops at the first failure or at the deadline. */
export async function runProbes(probes: Probe[], deadlineMs: number, onAttempt?: (e: HealthEvent) => void): Promise<HealthReport> {
  const deadline = Date.now() + deadlineMs;
  const results: CheckResult[] = [];
  for (const [index, p] of probes.entries()) {
    const started = Date.now();
    const of = p.retries + 1;
    let last: Attempt = { ok: false, output: '' };
    let attempts = 0;
    while (attempts < of) {
      const left = deadline - Date.now();
      if (left < Math.min(p.timeout, MIN_ATTEMPT_MS)) {
        last = { ok: false, output: deadlineReached(deadlineMs, last, attempts === 0 ? probes.slice(index) : probes.slice(index + 1)) };
        break;
      }
      attempts++;
      last = await withTimeout(p.attempt(Math.min(p.timeout, left)), Math.min(p.timeout, left));
      onAttempt?.({ check: p.name, attempt: attempts, of, ok: last.ok, output: last.output });
      if (last.ok || attempts === of) break;
      await sleep(Math.min(p.period, Math.max(0, deadline - Date.now())));
    }
    const result: CheckResult = { name: p.name, ok: last.ok, attempts, output: clip(last.output), ms: Date.now() - started };
    results.push(result);
    if (!result.ok) return { ok: false, results, failed: result };
  }
  return { ok: true, results };
}

/** The deadline's report: what the check last saw, and which checks never ran. */
function deadlineReached(deadlineMs: number, last: Attempt, notRun: Probe[]): string {
  return [
    `health deadline of ${deadlineMs / 1000} s reached`,
    last.output ? `last attempt: ${last.output}` : '',
    notRun.length ? `never ran: ${notRun.map((p) => p.name).join(', ')}` : '',
  ]
    .filter(Boolean)
    .join('; ');
}

/** An attempt that does not settle in time fails; one that throws fails with the error as its output. */
async function withTimeout(p: Promise<Attempt>, ms: number): Promise<Attempt> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Attempt>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, output: `no answer within ${ms / 1000} s` }), ms);
  });
  try {
    return await Promise.race([p.catch((err: unknown) => ({ ok: false, output: describeError(err) })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function cmdAttempt(sessionFor: (t: number) => Promise<Session>, cmd: string, timeoutMs: number): Promise<Attempt> {
  const s = await sessionFor(timeoutMs);
  const r = await s.exec(cmd, { timeoutMs });
  const output = `${r.stdout}${r.stderr}`.trim();
  return { ok: r.code === 0, output: r.code === 0 ? output : `exit ${r.code ?? r.signal}${output ? `: ${output}` : ''}` };
}

async function httpAttempt(c: HealthCheck, timeoutMs: number): Promise<Attempt> {
  const url = c.http!;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    return { ok: false, output: `GET ${url}: ${describeError(err)}${cause ? ` (${describeError(cause)})` : ''}` };
  }
  const body = await res.text();
  if (res.status !== c.status) return { ok: false, output: `GET ${url}: status ${res.status}, expected ${c.status}\n${body}` };
  if (c.body !== undefined && !body.includes(c.body)) return { ok: false, output: `GET ${url}: the body does not contain "${c.body}"\n${body}` };
  return { ok: true, output: `GET ${url}: status ${res.status}` };
}

function clip(s: string): string {
  return s.length > OUTPUT_LIMIT ? `${s.slice(0, OUTPUT_LIMIT)}… (${s.length - OUTPUT_LIMIT} more characters)` : s;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
