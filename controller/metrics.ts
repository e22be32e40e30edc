import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { VERDICT } from '../deploy/verdict.js';
import { RAMBOOT_VERSION } from '../lib/package.js';
import type { Controller, ControllerStatus, Envelope } from './controller.js';
import { OUTCOME, type PhaseName, type ReconcileRecord } from './history.js';
import type { Attempted } from './notify/dispatch.js';
import type { Target } from './notify/target.js';
import type { Repo } from './repo.js';

// /metrics in Prometheus' text format (prom-client): counters that move with the events
// (reconciles by outcome, deploys by verdict, polls, webhook deliveries, notifications),
// phase durations from each finished reconcile's record, and gauges read from the
// controller's status at each scrape. Counters start at zero with the process, as
// Prometheus expects (rate() handles the reset); every known label value is there from
// the start, so a series never appears out of nowhere.

/** Phases last from milliseconds (queued) to many minutes (a reboot under TCG). */
const PHASE_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600];
const TRIAL_PHASES = new Set(['reboot', 'health']);
const WEBHOOK_RESULTS = ['accepted', 'ignored', 'refused', 'unconfigured'] as const;
/** Every phase, checked complete by the compiler: each has its histogram series from the start. */
const PHASES = Object.keys({ queued: 1, verify: 1, build: 1, plan: 1, preflight: 1, upload: 1, reboot: 1, health: 1, promote: 1, rollback: 1, notify: 1 } satisfies Record<PhaseName, 1>);

export type MetricsSource = Pick<Controller, 'subscribe' | 'history' | 'status'>;
/** What the repository-wide gauges read: the one controller's status, or the fleet's. */
export type RepoStatus = Pick<ControllerStatus, 'paused' | 'lastPoll' | 'lastWebhook'>;

export class Metrics {
  readonly registry = new Registry();
  private readonly reconciles: Counter<string>;
  private readonly deploys: Counter<string>;
  private readonly phases: Histogram<string>;
  private readonly polls: Counter<'result'>;
  private readonly webhooks: Counter<'result'>;
  private readonly notifications: Counter<'target' | 'result'>;
  private readonly lastSuccess: Gauge<string>;
  /** The machines' controllers, by the value of their `machine` label ('' with one machine: no label). */
  private readonly sources = new Map<string, MetricsSource>();
  private repoSource?: () => RepoStatus;
  /** The statuses the gauges of a scrape read (one read of each journal and history per scrape). */
  private snapshot = new Map<string, ControllerStatus>();
  private repoSnapshot?: RepoStatus;

  /** With `machines`, every series about a machine carries a `machine` label (a repository of several). */
  constructor(private readonly o: { machines?: boolean } = {}) {
    const registers = [this.registry];
    const per = (names: string[]) => (o.machines ? ['machine', ...names] : names);
    collectDefaultMetrics({ register: this.registry });
    this.reconciles = new Counter({ name: 'ramboot_reconciles_total', help: 'Reconciles that ended, by outcome (superseded ones never started).', labelNames: per(['outcome']), registers });
    this.deploys = new Counter({ name: 'ramboot_deploys_total', help: 'Deploys that reached a verdict on the machine, by verdict.', labelNames: per(['verdict']), registers });
    this.phases = new Histogram({ name: 'ramboot_phase_duration_seconds', help: 'How long each phase of a finished reconcile took.', labelNames: per(['phase']), buckets: PHASE_BUCKETS, registers });
    this.polls = new Counter({ name: 'ramboot_polls_total', help: 'Looks at the branch (a local ref or the remote), by result.', labelNames: ['result'], registers });
    this.webhooks = new Counter({ name: 'ramboot_webhook_deliveries_total', help: 'Forge webhook deliveries received, by result.', labelNames: ['result'], registers });
    this.notifications = new Counter({ name: 'ramboot_notifications_total', help: 'Notifications handled, by target kind and result (delivered, unchanged, identical, failed, dropped).', labelNames: ['target', 'result'], registers });
    this.lastSuccess = new Gauge({ name: 'ramboot_last_success_timestamp_seconds', help: 'When a reconcile last ended promoted (Unix time); 0 if never.', labelNames: per([]), registers });
    for (const result of ['ok', 'error']) this.polls.inc({ result }, 0);
    for (const result of WEBHOOK_RESULTS) this.webhooks.inc({ result }, 0);
    if (!o.machines) this.zero('');
    this.gauges(registers);
  }

  /** Follows a machine's controller (named, with several machines); returns the function that stops it. */
  attach(ctrl: MetricsSource, machine = ''): () => void {
    this.sources.set(machine, ctrl);
    this.repoSource ??= () => ctrl.status();
    if (this.o.machines) this.zero(machine);
    const promoted = ctrl.history.list().find((r) => r.outcome === OUTCOME.PROMOTED && r.endedAt);
    if (promoted) this.lastSuccess.set(this.label(machine), Date.parse(promoted.endedAt!) / 1000);
    return ctrl.subscribe((e) => this.onEvent(ctrl, machine, e));
  }

  /** The repository-wide gauges (paused, the last poll and webhook) read the fleet's status. */
  attachRepo(status: () => RepoStatus): void {
    this.repoSource = status;
  }

  /** Every known label value from the start, so that a series never appears out of nowhere. */
  private zero(machine: string): void {
    const l = this.label(machine);
    // rollout-stopped exists only with several machines: a one-machine controller's series are as they were.
    for (const outcome of Object.values(OUTCOME)) if (this.o.machines || outcome !== OUTCOME.ROLLOUT_STOPPED) this.reconciles.inc({ ...l, outcome }, 0);
    for (const verdict of Object.values(VERDICT)) this.deploys.inc({ ...l, verdict }, 0);
    for (const phase of PHASES) this.phases.zero({ ...l, phase });
    if (this.o.machines) this.lastSuccess.set(l, 0);
  }

  private label(machine: string): Record<string, string> {
    return this.o.machines ? { machine } : {};
  }

  /** The repository, with each look at its branch counted. */
  countPolls(repo: Repo): Repo {
    return {
      ...repo,
      head: async () => {
        try {
          const commit = await repo.head();
          this.polls.inc({ result: 'ok' });
          return commit;
        } catch (err) {
          this.polls.inc({ result: 'error' });
          throw err;
        }
      },
    };
  }

  notified(t: Target, a: Attempted): void {
    this.notifications.inc({ target: t.kind, result: a.result });
  }

  /** The routes option of startServer: GET /metrics, and the count of webhook deliveries. */
  routes(): (app: FastifyInstance, ctrl: { status(): Pick<RepoStatus, 'lastWebhook'> }) => void {
    return (app, ctrl) => {
      app.get('/metrics', async (_req, reply) => reply.type(this.registry.contentType).send(await this.scrape()));
      app.addHook('onResponse', async (req, reply) => {
        if (req.method !== 'POST' || !req.url.startsWith('/hooks/')) return;
        this.webhooks.inc({ result: webhookResult(reply.statusCode, ctrl.status().lastWebhook?.result) });
      });
    };
  }

  private onEvent(ctrl: MetricsSource, machine: string, e: Envelope): void {
    const ev = e.event;
    const l = this.label(machine);
    if (ev.kind === 'superseded') this.reconciles.inc({ ...l, outcome: OUTCOME.SUPERSEDED });
    if (ev.kind === 'verdict') this.deploys.inc({ ...l, verdict: ev.outcome.verdict });
    if (ev.kind !== 'reconciled') return;
    this.reconciles.inc({ ...l, outcome: ev.outcome });
    const record = ctrl.history.get(ev.reconcile);
    if (record) this.observePhases(record, l);
    if (ev.outcome === OUTCOME.PROMOTED) this.lastSuccess.set(l, Date.now() / 1000);
  }

  private observePhases(r: ReconcileRecord, l: Record<string, string>): void {
    for (const p of r.phases) {
      if (p.end) this.phases.observe({ ...l, phase: p.name }, Math.max(0, Date.parse(p.end) - Date.parse(p.start)) / 1000);
    }
  }

  /** The text Prometheus scrapes; the gauges read one status of each controller, taken now. */
  scrape(): Promise<string> {
    this.snapshot = new Map([...this.sources].map(([m, c]) => [m, c.status()]));
    this.repoSnapshot = this.repoSource?.();
    return this.registry.metrics();
  }

  /** Gauges read from the controller's status when scraped: one source of truth. */
  private gauges(registers: Registry[]): void {
    const machines = () => this.snapshot;
    const repo = () => this.repoSnapshot;
    const label = (m: string) => this.label(m);
    const per = (names: string[]) => (this.o.machines ? ['machine', ...names] : names);
    new Gauge({ name: 'ramboot_controller_info', help: "The controller's version (always 1).", labelNames: ['version'], registers }).set({ version: RAMBOOT_VERSION }, 1);
    new Gauge({
      name: 'ramboot_running_build_info',
      help: 'The build and commit the machine runs, as the deploy journal says (always 1; no series before the first promotion).',
      labelNames: per(['build', 'commit']),
      registers,
      collect() {
        this.reset();
        for (const [m, s] of machines()) if (s.running) this.set({ ...label(m), build: s.running.buildId ?? '', commit: s.running.commit ?? '' }, 1);
      },
    });
    const machineGauge = (name: string, help: string, value: (s: ControllerStatus) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: per([]),
        registers,
        collect() {
          for (const [m, s] of machines()) {
            const v = value(s);
            if (v !== undefined) this.set(label(m), v);
          }
        },
      });
    const repoGauge = (name: string, help: string, value: (s: RepoStatus) => number | undefined) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = repo();
          const v = s && value(s);
          if (v !== undefined) this.set(v);
        },
      });
    machineGauge('ramboot_reconcile_in_progress', 'Whether a reconcile runs now (1) or not (0).', (s) => (s.current ? 1 : 0));
    machineGauge('ramboot_trial_in_progress', 'Whether the machine is in a trial boot now: rebooting into the candidate or under its health checks.', (s) => (TRIAL_PHASES.has(s.current?.phase ?? '') ? 1 : 0));
    machineGauge('ramboot_quarantined_commits', 'Commits that are not deployed again unless released.', (s) => s.quarantine.length);
    repoGauge('ramboot_paused', 'Whether automatic deploys are paused.', (s) => (s.paused ? 1 : 0));
    repoGauge('ramboot_last_poll_timestamp_seconds', 'When the branch was last looked at (Unix time).', (s) => seconds(s.lastPoll?.at));
    repoGauge('ramboot_last_poll_success', 'Whether the last look at the branch worked.', (s) => (s.lastPoll ? Number(s.lastPoll.ok) : undefined));
    repoGauge('ramboot_last_webhook_timestamp_seconds', 'When a forge webhook delivery last arrived (Unix time).', (s) => seconds(s.lastWebhook?.at));
  }
}

function seconds(iso: string | undefined): number | undefined {
  return iso ? Date.parse(iso) / 1000 : undefined;
}

/** The server records each delivery as "<kind>: <reason>" before answering. */
function webhookResult(code: number, recorded: string | undefined): (typeof WEBHOOK_RESULTS)[number] {
  if (code === 404) return 'unconfigured';
  if (code === 401) return 'refused';
  return recorded?.startsWith('ignored') ? 'ignored' : 'accepted';
}
