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

export class Metrics {
  readonly registry = new Registry();
  private readonly reconciles: Counter<'outcome'>;
  private readonly deploys: Counter<'verdict'>;
  private readonly phases: Histogram<'phase'>;
  private readonly polls: Counter<'result'>;
  private readonly webhooks: Counter<'result'>;
  private readonly notifications: Counter<'target' | 'result'>;
  private readonly lastSuccess: Gauge;
  private source?: MetricsSource;
  /** The status the gauges of a scrape read (one read of the journal and history per scrape). */
  private snapshot?: ControllerStatus;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.reconciles = new Counter({ name: 'ramboot_reconciles_total', help: 'Reconciles that ended, by outcome (superseded ones never started).', labelNames: ['outcome'], registers });
    this.deploys = new Counter({ name: 'ramboot_deploys_total', help: 'Deploys that reached a verdict on the machine, by verdict.', labelNames: ['verdict'], registers });
    this.phases = new Histogram({ name: 'ramboot_phase_duration_seconds', help: 'How long each phase of a finished reconcile took.', labelNames: ['phase'], buckets: PHASE_BUCKETS, registers });
    this.polls = new Counter({ name: 'ramboot_polls_total', help: 'Looks at the branch (a local ref or the remote), by result.', labelNames: ['result'], registers });
    this.webhooks = new Counter({ name: 'ramboot_webhook_deliveries_total', help: 'Forge webhook deliveries received, by result.', labelNames: ['result'], registers });
    this.notifications = new Counter({ name: 'ramboot_notifications_total', help: 'Notifications handled, by target kind and result (delivered, unchanged, identical, failed, dropped).', labelNames: ['target', 'result'], registers });
    this.lastSuccess = new Gauge({ name: 'ramboot_last_success_timestamp_seconds', help: 'When a reconcile last ended promoted (Unix time); 0 if never.', registers });
    for (const outcome of Object.values(OUTCOME)) this.reconciles.inc({ outcome }, 0);
    for (const verdict of Object.values(VERDICT)) this.deploys.inc({ verdict }, 0);
    for (const result of ['ok', 'error']) this.polls.inc({ result }, 0);
    for (const result of WEBHOOK_RESULTS) this.webhooks.inc({ result }, 0);
    for (const phase of PHASES) this.phases.zero({ phase });
    this.gauges(registers);
  }

  /** Follows the controller's events; returns the function that stops it. */
  attach(ctrl: MetricsSource): () => void {
    this.source = ctrl;
    const promoted = ctrl.history.list().find((r) => r.outcome === OUTCOME.PROMOTED && r.endedAt);
    if (promoted) this.lastSuccess.set(Date.parse(promoted.endedAt!) / 1000);
    return ctrl.subscribe((e) => this.onEvent(ctrl, e));
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
  routes(): (app: FastifyInstance, ctrl: Controller) => void {
    return (app, ctrl) => {
      app.get('/metrics', async (_req, reply) => reply.type(this.registry.contentType).send(await this.scrape()));
      app.addHook('onResponse', async (req, reply) => {
        if (req.method !== 'POST' || !req.url.startsWith('/hooks/')) return;
        this.webhooks.inc({ result: webhookResult(reply.statusCode, ctrl.status().lastWebhook?.result) });
      });
    };
  }

  private onEvent(ctrl: MetricsSource, e: Envelope): void {
    const ev = e.event;
    if (ev.kind === 'superseded') this.reconciles.inc({ outcome: OUTCOME.SUPERSEDED });
    if (ev.kind === 'verdict') this.deploys.inc({ verdict: ev.outcome.verdict });
    if (ev.kind !== 'reconciled') return;
    this.reconciles.inc({ outcome: ev.outcome });
    const record = ctrl.history.get(ev.reconcile);
    if (record) this.observePhases(record);
    if (ev.outcome === OUTCOME.PROMOTED) this.lastSuccess.set(Date.now() / 1000);
  }

  private observePhases(r: ReconcileRecord): void {
    for (const p of r.phases) {
      if (p.end) this.phases.observe({ phase: p.name }, Math.max(0, Date.parse(p.end) - Date.parse(p.start)) / 1000);
    }
  }

  /** The text Prometheus scrapes; the gauges read one status of the controller, taken now. */
  scrape(): Promise<string> {
    this.snapshot = this.source?.status();
    return this.registry.metrics();
  }

  /** Gauges read from the controller's status when scraped: one source of truth. */
  private gauges(registers: Registry[]): void {
    const now = () => this.snapshot;
    new Gauge({ name: 'ramboot_controller_info', help: "The controller's version (always 1).", labelNames: ['version'], registers }).set({ version: RAMBOOT_VERSION }, 1);
    new Gauge({
      name: 'ramboot_running_build_info',
      help: 'The build and commit the machine runs, as the deploy journal says (always 1; no series before the first promotion).',
      labelNames: ['build', 'commit'],
      registers,
      collect() {
        this.reset();
        const r = now()?.running;
        if (r) this.set({ build: r.buildId ?? '', commit: r.commit ?? '' }, 1);
      },
    });
    const gauge = (name: string, help: string, value: (s: ControllerStatus) => number | undefined) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = now();
          const v = s && value(s);
          if (v !== undefined) this.set(v);
        },
      });
    gauge('ramboot_reconcile_in_progress', 'Whether a reconcile runs now (1) or not (0).', (s) => (s.current ? 1 : 0));
    gauge('ramboot_trial_in_progress', 'Whether the machine is in a trial boot now: rebooting into the candidate or under its health checks.', (s) => (TRIAL_PHASES.has(s.current?.phase ?? '') ? 1 : 0));
    gauge('ramboot_quarantined_commits', 'Commits that are not deployed again unless released.', (s) => s.quarantine.length);
    gauge('ramboot_paused', 'Whether automatic deploys are paused.', (s) => (s.paused ? 1 : 0));
    gauge('ramboot_last_poll_timestamp_seconds', 'When the branch was last looked at (Unix time).', (s) => seconds(s.lastPoll?.at));
    gauge('ramboot_last_poll_success', 'Whether the last look at the branch worked.', (s) => (s.lastPoll ? Number(s.lastPoll.ok) : undefined));
    gauge('ramboot_last_webhook_timestamp_seconds', 'When a forge webhook delivery last arrived (Unix time).', (s) => seconds(s.lastWebhook?.at));
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
