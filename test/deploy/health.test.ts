import { createServer, type Server } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HealthCheck } from '../../lib/config-schema.js';
import { runHealth, runProbes, type HealthEvent, type Probe } from '../../deploy/health.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

// cmd checks and the built-in checks run against a local OpenSSH server standing in for
// the NAS; openrc is simulated there by a stand-in `rc-service` that reports states
// from files. http checks run against a small local HTTP server.

let sshd: TestSshd;
let work: string;
let http: Server;
let base: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ramboot-health-'));
  // Stand-in openrc: the state of service $1 is the content of $work/state/$1 (default: started).
  sshd = await startSshd({
    programs: {
      'rc-service': [
        `st=$(cat '${work}/state/'"$1" 2>/dev/null || echo started)`,
        'echo " * status: $st"',
        'case $st in started) exit 0;; crashed) exit 32;; stopped) exit 3;; *) exit 16;; esac',
      ].join('\n'),
    },
  });
  await mkdir(join(work, 'state'));
  await mkdir(join(work, 'runlevel'));
  for (const s of ['sshd', 'networking', 'nfs']) await writeFile(join(work, 'runlevel', s), '');
  http = createServer((req, res) => {
    if (req.url === '/ok') res.end('hello from the nas');
    else if (req.url === '/slow') setTimeout(() => res.end('late'), 2_000);
    else {
      res.statusCode = 503;
      res.end('samba is down');
    }
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
});
afterAll(async () => {
  await sshd.stop();
  await new Promise((r) => http.close(r));
  await rm(work, { recursive: true, force: true });
});

const check = (c: Partial<HealthCheck> & { name: string }): HealthCheck => ({ status: 200, period: 50, timeout: 2_000, retries: 0, ...c }) as HealthCheck;

async function health(checks: HealthCheck[], deadlineMs = 20_000, settleMs = 0) {
  const events: HealthEvent[] = [];
  const report = await runHealth({ target: sshd.target(), checks, deadlineMs, settleMs, runlevelDir: join(work, 'runlevel'), onAttempt: (e) => events.push(e) });
  return { report, events };
}

describe('runHealth against a local sshd standing in for the NAS (openrc simulated by a stand-in rc-service)', () => {
  it('passes the built-ins and the repo checks in order', async () => {
    const { report } = await health([
      check({ name: 'disk', cmd: 'test -d /' }),
      check({ name: 'web', http: `${base}/ok`, body: 'hello' }),
    ]);
    expect(report.ok).toBe(true);
    expect(report.results.map((r) => [r.name, r.ok])).toEqual([
      ['ssh', true],
      ['services', true],
      ['disk', true],
      ['web', true],
      ['services, settled', true],
    ]);
  });

  it('looks at the services once more after the checks: one that crashed since the first look fails the trial', async () => {
    await writeFile(join(work, 'state', 'nfs'), 'started');
    // The repo's check runs after the first look; the stand-in service "crashes" meanwhile.
    const { report } = await health([check({ name: 'crash nfs', cmd: `echo crashed > '${work}/state/nfs'` })], 20_000, 1_000);
    await rm(join(work, 'state', 'nfs'), { force: true });
    expect(report.results.map((r) => [r.name, r.ok])).toEqual([
      ['ssh', true],
      ['services', true],
      ['crash nfs', true],
      ['services, settled', false],
    ]);
    expect(report.failed?.output).toMatch(/^exit 1: nfs: crashed$/);
  });

  it('fails a cmd check with its exit code and output, and stops there', async () => {
    const { report } = await health([
      check({ name: 'zpool', cmd: 'echo "pool tank is DEGRADED"; echo "disk sdb missing" >&2; exit 4' }),
      check({ name: 'never-run', cmd: 'true' }),
    ]);
    expect(report.ok).toBe(false);
    expect(report.failed?.name).toBe('zpool');
    expect(report.failed?.output).toBe('exit 4: pool tank is DEGRADED\ndisk sdb missing');
    expect(report.results.map((r) => r.name)).toEqual(['ssh', 'services', 'zpool']);
  });

  it('fails an http check on status, on body, and when nothing listens', async () => {
    const status = await health([check({ name: 'samba', http: `${base}/down` })]);
    expect(status.report.failed?.output).toBe(`GET ${base}/down: status 503, expected 200\nsamba is down`);
    const body = await health([check({ name: 'web', http: `${base}/ok`, body: 'welcome' })]);
    expect(body.report.failed?.output).toMatch(/the body does not contain "welcome"\nhello from the nas/);
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r));
    const refused = await health([check({ name: 'web', http: `http://127.0.0.1:${port}/` })]);
    expect(refused.report.failed?.output).toMatch(/ECONNREFUSED/);
  });

  it('expects another status when told to', async () => {
    const { report } = await health([check({ name: 'maintenance', http: `${base}/down`, status: 503, body: 'down' })]);
    expect(report.ok).toBe(true);
  });

  it('times out an attempt that does not answer', async () => {
    const { report } = await health([check({ name: 'slow', http: `${base}/slow`, timeout: 300 })]);
    expect(report.failed?.output).toMatch(/slow.*(aborted|timeout|no answer)/i);
    const cmd = await health([check({ name: 'hang', cmd: 'sleep 10', timeout: 300 })]);
    expect(cmd.report.failed?.output).toMatch(/no exit within 0.3 s|no answer within 0.3 s/);
  });

  it('retries a check period apart and passes when it recovers', async () => {
    const flag = join(work, 'attempts');
    await writeFile(flag, '');
    // Fails twice, then passes: a service that takes a moment after boot.
    const cmd = `echo x >> '${flag}'; [ "$(wc -l < '${flag}')" -ge 3 ]`;
    const { report, events } = await health([check({ name: 'late', cmd, retries: 3, period: 100 })]);
    expect(report.ok).toBe(true);
    expect(events.filter((e) => e.check === 'late').map((e) => [e.attempt, e.of, e.ok])).toEqual([
      [1, 4, false],
      [2, 4, false],
      [3, 4, true],
    ]);
  });

  it('names a crashed or stopped service of the default runlevel', async () => {
    await writeFile(join(work, 'state', 'nfs'), 'crashed');
    await writeFile(join(work, 'state', 'networking'), 'stopped');
    try {
      // The built-in retries for about half a minute; the deadline cuts it short. No attempt
      // starts with less than MIN_ATTEMPT_MS left, so the services check runs at least once
      // even where the SSH check is slow (it took 2.5 s on a loaded 2-core machine).
      const { report } = await health([], 15_000);
      expect(report.failed?.name).toBe('services');
      expect(report.failed?.output).toMatch(/networking: stopped\nnfs: crashed/);
      expect(report.failed?.output).toMatch(/^health deadline of 15 s reached; last attempt: exit 1: /);
      expect(report.failed?.output).toMatch(/never ran: services, settled$/);
    } finally {
      await rm(join(work, 'state', 'nfs'));
      await rm(join(work, 'state', 'networking'));
    }
  });

  it('fails the ssh built-in when the machine presents another host key', async () => {
    const events: HealthEvent[] = [];
    const report = await runHealth({ target: sshd.target({ hostKey: sshd.otherHostKey }), checks: [], deadlineMs: 5_000, onAttempt: (e) => events.push(e) });
    expect(report.failed?.name).toBe('ssh');
    expect(report.failed?.output).toMatch(/host key mismatch/);
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('runProbes', () => {
  const probe = (name: string, results: boolean[], p: Partial<Probe> = {}): Probe => {
    let i = 0;
    return {
      name,
      period: 10,
      timeout: 1_000,
      retries: results.length - 1,
      attempt: async () => ({ ok: results[Math.min(i++, results.length - 1)]!, output: `${name} attempt ${i}` }),
      ...p,
    };
  };

  // [name, probes, deadline, ok, failed check, attempts of the failed one]
  const table: [string, () => Probe[], number, boolean, string | undefined, number | undefined][] = [
    ['all pass first time', () => [probe('a', [true]), probe('b', [true])], 5_000, true, undefined, undefined],
    ['passes on the last retry', () => [probe('a', [false, false, true])], 5_000, true, undefined, undefined],
    ['fails after all retries', () => [probe('a', [false, false, false])], 5_000, false, 'a', 3],
    ['the first failure ends the run', () => [probe('a', [true]), probe('b', [false]), probe('c', [true])], 5_000, false, 'b', 1],
    ['a hanging attempt is cut at its timeout', () => [probe('a', [true], { timeout: 50, attempt: () => new Promise(() => {}) })], 5_000, false, 'a', 1],
    ['a throwing attempt fails with its message', () => [probe('a', [true], { attempt: () => Promise.reject(new Error('boom')) })], 5_000, false, 'a', 1],
  ];
  it.each(table)('%s', async (_name, probes, deadline, ok, failed, attempts) => {
    const r = await runProbes(probes(), deadline);
    expect(r.ok).toBe(ok);
    expect(r.failed?.name).toBe(failed);
    if (attempts !== undefined) expect(r.failed?.attempts).toBe(attempts);
  });

  it('the deadline ends retries early: no more attempts than fit in it, however fast the machine is', async () => {
    // Attempts start at least a period apart, so at most 4 start within 350 ms; a slower machine makes fewer.
    const r = await runProbes([probe('a', Array(100).fill(false) as boolean[], { period: 100, timeout: 50 })], 350);
    expect(r.ok).toBe(false);
    expect(r.failed?.attempts).toBeGreaterThanOrEqual(1);
    expect(r.failed?.attempts).toBeLessThanOrEqual(4);
    expect(r.failed?.output).toMatch(/^health deadline of 0.35 s reached; last attempt: a attempt \d+$/);
  });

  it('starts no attempt with less time left than it may need, and names the checks that never ran', async () => {
    let started = 0;
    const slow = probe('slow', [true], { timeout: 5_000, attempt: async () => { started++; await sleep(300); return { ok: true, output: 'slow done' }; } });
    const never = probe('never', [true], { timeout: 5_000, attempt: async () => { started++; return { ok: true, output: '' }; } });
    // 1 s is less than MIN_ATTEMPT_MS: the first probe is not started at all.
    const r = await runProbes([slow, never, probe('last', [true])], 1_000);
    expect(started).toBe(0);
    expect(r.failed?.name).toBe('slow');
    expect(r.failed?.attempts).toBe(0);
    expect(r.failed?.output).toBe('health deadline of 1 s reached; never ran: slow, never, last');
  });
});
