import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { FastifyInstance } from 'fastify';
import { Controller, type AnyEvent } from '../../controller/controller.js';
import type { ReconcileRecord } from '../../controller/history.js';
import { Metrics } from '../../controller/metrics.js';
import type { RetryPolicy } from '../../controller/notify/dispatch.js';
import { Notifier } from '../../controller/notify/notifier.js';
import { Live } from '../../controller/page/live.js';
import { MachineProbe, isDeploying, machineReach } from '../../controller/page/probe.js';
import { pageRoutes } from '../../controller/page/routes.js';
import { localRepo } from '../../controller/repo.js';
import { startServer } from '../../controller/server.js';
import type { MachineState } from '../../controller/state.js';
import { Journal } from '../../deploy/journal.js';
import type { LocalSettings } from '../../deploy/target.js';
import { REASON } from '../../deploy/verdict.js';
import { freePort } from './ramboot.js';

// A real controller following a real git repository, with its views wired as `ramboot
// up` wires them (the status page, /metrics, notifications), served on loopback. No
// machine is needed: commits whose ramboot.yaml is invalid end at the build within a
// second, and the state of reconciles that need a machine (a promotion, a rollback) is
// written the way the controller writes it: history records, the deploy journal.

export const VALID_YAML = (extra = '') => `host: { name: nas }\ndistro: { name: alpine }\n${extra}`;
export const INVALID_YAML = (note: string) => `host: { name: nas }\ndistro: { name: gentoo }\n# ${note}\n`;

export interface ViewsUnderTest {
  repo: string;
  state: MachineState;
  ctrl: Controller;
  metrics: Metrics;
  live: Live;
  notifier: Notifier;
  machine: MachineProbe;
  app: FastifyInstance;
  base: string;
  token: string;
  git(args: string[]): Promise<string>;
  /** Commits ramboot.yaml (and other files) and returns the commit id. */
  commit(message: string, yaml: string, files?: Record<string, string>): Promise<string>;
  /** A history record, saved as the controller saves one. */
  save(r: Partial<ReconcileRecord> & Pick<ReconcileRecord, 'commit'>): ReconcileRecord;
  /** Records a promotion of `commit` in the deploy journal: the machine runs it. */
  promote(commit: string, buildId: string, hostKey?: string): Promise<void>;
  /**
   * An event through the controller's own publish, as its reconcile emits it (logged in
   * the record's log, handed to every subscriber): how a test replays a deploy that
   * needs a machine.
   */
  emit(event: AnyEvent, record?: ReconcileRecord): void;
  close(): Promise<void>;
}

export interface ViewsOptions {
  retry?: RetryPolicy;
  /** How to reach the machine (the test sshd); nothing by default. */
  reach?: () => LocalSettings;
  keep?: number;
  /** The forges' webhook secret; without it /hooks/git says it is not configured. */
  webhookSecret?: string;
  /** The controller's identity (`ramboot up --identity`): builds decrypt the commit's secrets with it. */
  identity?: string;
}

export async function startViews(o: ViewsOptions = {}): Promise<ViewsUnderTest> {
  const repo = mkdtempSync(join(tmpdir(), 'ramboot-views-repo-'));
  const stateDir = mkdtempSync(join(tmpdir(), 'ramboot-views-state-'));
  const state = { dir: stateDir, images: join(stateDir, 'images'), cache: join(stateDir, 'cache'), vm: join(stateDir, 'vm') };
  mkdirSync(state.images, { recursive: true });
  const git = async (args: string[]) => (await execa('git', ['-c', 'user.name=Tess Ter', '-c', 'user.email=tess@example.invalid', ...args], { cwd: repo })).stdout.trim();
  await execa('git', ['init', '-q', '-b', 'main', repo]);
  const reach = o.reach ?? (() => ({}));
  const metrics = new Metrics();
  const ctrl = new Controller({ repo: metrics.countPolls(localRepo(repo, 'main')), state, identity: o.identity, reach, keep: o.keep ?? 200, emit: () => {} });
  const live = new Live();
  live.attach(ctrl);
  metrics.attach(ctrl);
  const notifier = new Notifier({ gitdir: join(repo, '.git'), retry: o.retry, onDelivery: (t, a) => metrics.notified(t, a) });
  notifier.attach(ctrl);
  const machine = new MachineProbe({ reach: () => machineReach(state, reach, ctrl.running()), busy: () => isDeploying(ctrl.status().current?.phase), promoted: () => ctrl.running()?.buildId, everyMs: 0 });
  const token = 'api-token-plaintext-7Qm2xV9kL4';
  const port = await freePort();
  const app = await startServer(ctrl, { host: '127.0.0.1', port, token, webhookSecret: o.webhookSecret, routes: [pageRoutes({ host: 'nas', live, machine, notifications: () => notifier.state() }), metrics.routes()] });
  let seq = 0;
  return {
    repo,
    state,
    ctrl,
    metrics,
    live,
    notifier,
    machine,
    app,
    base: `http://127.0.0.1:${port}`,
    token,
    git,
    async commit(message, yaml, files = {}) {
      writeFileSync(join(repo, 'ramboot.yaml'), yaml);
      for (const [path, content] of Object.entries(files)) {
        mkdirSync(join(repo, path, '..'), { recursive: true });
        writeFileSync(join(repo, path), content);
      }
      await git(['add', '-A']);
      await git(['commit', '-q', '--allow-empty', '-m', message]);
      return git(['rev-parse', 'HEAD']);
    },
    save(r) {
      const record: ReconcileRecord = {
        id: `${ctrl.history.newId().slice(0, -7)}-${String(seq++).padStart(6, '0')}`,
        trigger: { kind: 'manual' },
        noticedAt: new Date().toISOString(),
        phases: [],
        state: 'done',
        ...r,
      };
      ctrl.history.save(record);
      return record;
    },
    async promote(commit, buildId, hostKey) {
      const journal = await Journal.open(stateDir);
      await journal.record(`deploy-${buildId}`, { step: 'verdict', buildId, commit, hostKey, outcome: { verdict: 'promoted', reason: REASON.HEALTHY, message: `build ${buildId} is healthy and the default` } });
    },
    emit(event, record) {
      (ctrl as unknown as { publish(e: AnyEvent, r?: ReconcileRecord): void }).publish(event, record);
    },
    async close() {
      await app.close();
    },
  };
}

/** Phases of a reconcile that went the whole way, ending `secondsAgo` ago, each taking the given seconds. */
export function phasesOf(endedSecondsAgo: number, took: [ReconcileRecord['phases'][number]['name'], number][]): { phases: ReconcileRecord['phases']; startedAt: string; endedAt: string; noticedAt: string } {
  const total = took.reduce((a, [, s]) => a + s, 0);
  let t = Date.now() - (endedSecondsAgo + total) * 1000;
  const phases = took.map(([name, s]) => {
    const start = new Date(t).toISOString();
    t += s * 1000;
    return { name, start, end: new Date(t).toISOString() };
  });
  return { phases, noticedAt: phases[0]!.start, startedAt: phases[0]!.end!, endedAt: phases.at(-1)!.end! };
}
