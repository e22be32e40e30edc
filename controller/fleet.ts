import { gitSource, listMachines } from '../builder/source.js';
import { REASON } from '../deploy/verdict.js';
import { describe } from '../lib/errors.js';
import type { Emit } from '../lib/events.js';
import { RAMBOOT_VERSION } from '../lib/package.js';
import { Controller, short, type AnyEvent, type ControllerStatus, type Envelope } from './controller.js';
import { Follower } from './follower.js';
import { OUTCOME, type OutcomeName, type ReconcileRecord } from './history.js';
import { repositorySettings } from './open-machine.js';
import type { Persisted } from './persisted.js';
import type { Quarantined } from './quarantine.js';
import { Queue, type Request } from './queue.js';
import type { Repo } from './repo.js';
import { rollOut, rolloutOrder, type MachineResult } from './rollout.js';
import { verifyCommit } from './signing.js';
import { trustAfterPromotion } from './trust.js';

// The controller of a repository of several machines (machines/NAME/): one branch, one
// queue of commits, one trust policy; each commit is rolled out machine by machine, the
// canary first (rollout.ts). Each machine keeps its own controller (controller.ts), with
// its own state directory, journal, history and quarantine: the fleet runs their
// reconciles in the rollout's order and stops a rollout at the first machine that does
// not come through, quarantining the commit on the machines it did not reach.

export interface FleetOptions {
  repo: Repo;
  /** The repository's own state directory: the branch, the trust policy, paused. */
  stateDir: string;
  /** An allowed-signers file from the command line: signing is required, and no commit changes it. */
  signers?: string;
  branchGiven?: boolean;
  /** The controller of a machine, made when a verified commit (given) first names it. */
  open: (machine: string, commit: string) => Promise<Controller>;
  emit: Emit<AnyEvent>;
}

export interface RolloutStatus {
  commit: string;
  startedAt: string;
  endedAt?: string;
  /** Each machine reached, in rollout order, and how its reconcile ended. */
  machines: { machine: string; outcome?: OutcomeName; message?: string }[];
  notReached: string[];
  stoppedBy?: string;
}

export interface FleetStatus {
  repo: string;
  branch: string;
  controller: { version: string; pid: number; startedAt: string };
  paused: boolean;
  signing: { required: boolean; signers?: string };
  desired?: { commit: string; subject?: string; author?: string };
  /** The rollout in progress, else the last one. */
  rollout?: RolloutStatus;
  retry?: { commit: string; at: string; attempt: number; reason: string };
  lastPoll?: Persisted['lastPoll'];
  lastWebhook?: Persisted['lastWebhook'];
  machines: ControllerStatus[];
}

export class Fleet extends Follower {
  readonly machines = new Map<string, Controller>();
  protected readonly queue: Queue;
  private rollout?: RolloutStatus;
  /** The signing policy of the rollout in progress: its commit's promotion on the canary changes the fleet's for the next one, not for the machines after it. */
  private policy?: string;

  constructor(private readonly o: FleetOptions) {
    super(o.repo, o.stateDir);
    this.queue = new Queue(
      (r) => this.roll(r),
      (replaced, by) => this.publish({ kind: 'superseded', source: 'controller', commit: replaced.commit, by: by.commit }),
      (r, err) => this.publish({ kind: 'warn', source: 'controller', message: `the rollout of ${short(r.commit)} crashed: ${describe(err)}` }),
    );
  }

  /** Opens the machines the trusted start commit names and resumes what their journals left open. */
  async start(commit: string): Promise<void> {
    for (const m of await listMachines(await gitSource(this.o.repo.gitdir, commit))) await this.machine(m, commit);
    // A deploy a journal left open resumes in its machine's own queue; reconcileNow waits for it.
    for (const c of this.machines.values()) await c.recover();
  }

  protected quarantined(commit: string): boolean {
    return [...this.machines.values()].some((c) => c.quarantine.holds(commit));
  }

  /** Lifts the commit's quarantine on every machine and rolls it out again, forced. */
  release(commit: string): Quarantined[] {
    const lifted = [...this.machines.values()].flatMap((c) => c.quarantine.release(commit));
    if (lifted.length > 0) this.notice(lifted[0]!.commit, { kind: 'release' }, { force: true });
    return lifted;
  }

  /**
   * watch.refresh: the commit every machine runs, rebuilt with fresh packages and rolled
   * out again. Machines that run different commits (a rollout that stopped) are left
   * alone: a refresh never carries a commit to a machine that does not run it.
   */
  refresh(): void {
    const running = new Set([...this.machines.values()].map((c) => c.running()?.commit));
    const [commit] = running;
    if (running.size !== 1 || !commit) {
      this.publish({ kind: 'warn', source: 'controller', message: 'watch.refresh skipped: the machines do not all run the same commit' });
      return;
    }
    this.notice(commit, { kind: 'refresh' }, { refresh: true });
  }

  async scrub(): Promise<void> {
    for (const c of this.machines.values()) await c.scrub();
  }

  signers(): string | undefined {
    return this.o.signers ?? this.persisted.signers;
  }

  /** The policy the machines' verify steps use: the rollout's, taken when it started. */
  rolloutSigners(): string | undefined {
    return this.policy ?? this.signers();
  }

  /** What every machine's status shows as the fleet's: paused, and the branch's commit. */
  shared(): { paused: boolean; desired?: FleetStatus['desired'] } {
    return { paused: this.persisted.paused, desired: this.desired };
  }

  status(): FleetStatus {
    return {
      repo: this.o.repo.label,
      branch: this.o.repo.branch,
      controller: { version: RAMBOOT_VERSION, pid: process.pid, startedAt: this.startedAt },
      paused: this.persisted.paused,
      signing: { required: !!this.signers(), signers: this.signers() },
      desired: this.desired,
      rollout: this.rollout,
      retry: this.retry && { commit: this.retry.commit, at: this.retry.at, attempt: this.retry.attempt, reason: this.retry.reason },
      lastPoll: this.persisted.lastPoll,
      lastWebhook: this.persisted.lastWebhook,
      machines: [...this.machines.values()].map((c) => c.status()),
    };
  }

  drained(): Promise<void> {
    return this.queue.drained();
  }

  async stop(signal: NodeJS.Signals): Promise<void> {
    this.stopping = true;
    this.cancelRetry();
    await Promise.all([...this.machines.values()].map((c) => c.stop(signal)));
  }

  // ---------------------------------------------------------------- the rollout

  private async roll(req: Request): Promise<void> {
    if (this.stopping) return;
    this.policy = this.signers();
    try {
      await this.rollOnce(req);
    } finally {
      this.policy = undefined;
    }
  }

  private async rollOnce(req: Request): Promise<void> {
    // The commit's machines and rollout settings count only once it passed the policy in force.
    const untrusted = await this.untrusted(req.commit);
    if (untrusted) {
      for (const c of this.machines.values()) c.heldBack(req, `untrusted commit: ${untrusted}; nothing was built`, OUTCOME.UNTRUSTED, REASON.UNTRUSTED_COMMIT);
      this.rolledOut(req.commit, `untrusted commit ${short(req.commit)}: ${untrusted}; not rolled out`);
      return;
    }
    const source = await gitSource(this.o.repo.gitdir, req.commit);
    const names = await listMachines(source);
    let settings;
    try {
      settings = (await repositorySettings(source)).rollout;
    } catch (err) {
      // A broken top-level ramboot.yaml: every machine's build reports it with its file and line.
      settings = { parallel: 1 };
      this.publish({ kind: 'warn', source: 'controller', message: `the rollout settings of ${short(req.commit)} cannot be read (${describe(err)}); machines in name order` });
    }
    if (names.length === 0) {
      this.rolledOut(req.commit, `${short(req.commit)} describes no machines/NAME/: a repository of one machine; start ramboot up again to follow it`);
      return;
    }
    for (const m of names) {
      try {
        await this.machine(m, req.commit);
      } catch (err) {
        // Its virtual NAS did not start, say: the whole rollout waits, nothing is quarantined.
        this.retryLater(req, `machine ${m} cannot be opened: ${describe(err)}`);
        this.rolledOut(req.commit, `the rollout of ${short(req.commit)} waits: machine ${m} cannot be opened`);
        return;
      }
    }
    try {
      rolloutOrder(names, settings);
    } catch (err) {
      // rollout.canary names no machine: a person fixes ramboot.yaml.
      const message = describe(err);
      for (const c of this.machines.values()) c.heldBack(req, `the rollout cannot start: ${message}`, OUTCOME.BUILD_FAILED, REASON.BUILD_FAILED);
      this.rolledOut(req.commit, `the rollout of ${short(req.commit)} cannot start: ${message}`);
      return;
    }
    const status: RolloutStatus = { commit: req.commit, startedAt: new Date().toISOString(), machines: [], notReached: [] };
    this.rollout = status;
    const result = await rollOut(
      names,
      settings,
      async (machine) => {
        const entry: RolloutStatus['machines'][number] = { machine };
        status.machines.push(entry);
        const r = await this.reconcileOn(machine, req);
        Object.assign(entry, { outcome: r.outcome, message: r.message });
        if (r.ok) await this.trust(req.commit);
        return r;
      },
      () => !!this.queue.pending || this.stopping,
    );
    status.notReached = result.notReached;
    status.stoppedBy = result.stoppedBy?.machine;
    status.endedAt = new Date().toISOString();
    const stop = result.stoppedBy;
    if (stop?.retry) this.retryLater(req, `${stop.machine}: ${stop.message}`);
    else if (stop && !this.stopping) {
      this.retried = undefined;
      const why = stop.message.replace(/ \(quarantined: [^)]*\)$/, '');
      for (const m of result.notReached) {
        this.machines.get(m)!.heldBack(req, `the rollout of ${short(req.commit)} stopped at machine ${stop.machine} (${stop.outcome}: ${why}); ${m} was not touched`);
      }
    } else this.retried = undefined;
    this.rolledOut(
      req.commit,
      this.stopping
        ? `rollout of ${short(req.commit)} interrupted: the controller stops; the next start takes it up`
        : stop?.retry
          ? `rollout of ${short(req.commit)} waits: ${stop.machine} cannot be reached or built now; it is tried again later`
          : stop
            ? `rollout of ${short(req.commit)} stopped at ${stop.machine} (${stop.outcome})${result.notReached.length ? `; not reached: ${result.notReached.join(', ')}` : ''}`
            : result.notReached.length
              ? `rollout of ${short(req.commit)} superseded by a newer commit before ${result.notReached.join(', ')}`
              : `rollout of ${short(req.commit)} done: ${result.results.map((r) => `${r.machine} ${r.outcome}`).join(', ')}`,
      { results: result.results.map((r) => ({ machine: r.machine, outcome: r.outcome })), stoppedBy: stop?.machine, notReached: result.notReached },
    );
  }

  /** The rollout of a commit ended, however: what `git push` output waits for, and the log says. */
  private rolledOut(commit: string, message: string, o: { results?: { machine: string; outcome: string }[]; stoppedBy?: string; notReached?: string[] } = {}): void {
    this.publish({ kind: 'rolled-out', source: 'controller', commit, results: o.results ?? [], stoppedBy: o.stoppedBy, notReached: o.notReached ?? [], message });
  }

  /** One machine's reconcile of the commit, as the rollout reads it. */
  private async reconcileOn(machine: string, req: Request): Promise<MachineResult & { outcome: OutcomeName }> {
    let rec: ReconcileRecord | undefined;
    try {
      rec = await this.machines.get(machine)!.reconcileNow(req);
    } catch (err) {
      // A bug, not a verdict: said, and the rollout waits to try again; nothing is quarantined for it.
      const message = `the reconcile crashed: ${describe(err)}`;
      this.publish({ kind: 'warn', source: 'controller', message: `${machine}: ${message}` });
      return { machine, ok: false, retry: true, outcome: OUTCOME.RETRY, message };
    }
    const outcome = rec?.outcome ?? OUTCOME.INTERRUPTED;
    return { machine, ok: outcome === OUTCOME.PROMOTED, retry: outcome === OUTCOME.RETRY, outcome, message: rec?.message ?? 'the controller stopped' };
  }

  /** Why the commit fails the signature policy in force, or undefined when it passes (or none is in force). */
  private async untrusted(commit: string): Promise<string | undefined> {
    const signers = this.rolloutSigners();
    if (!signers) return undefined;
    try {
      const info = await this.o.repo.info(commit);
      const check = await verifyCommit(await this.o.repo.rawCommit(commit), info.committerEmail, signers);
      return check.ok ? undefined : check.reason;
    } catch (err) {
      return describe(err);
    }
  }

  /** The first promotion of a commit makes its watch.signers and watch.branch the fleet's (trust.ts). */
  private async trust(commit: string): Promise<void> {
    let config;
    try {
      config = await repositorySettings(await gitSource(this.o.repo.gitdir, commit));
    } catch (err) {
      this.publish({ kind: 'warn', source: 'controller', message: `the trust settings of ${short(commit)} cannot be read (${describe(err)}); the policy in force stays` });
      return;
    }
    if (this.persisted.promoted !== commit) this.persist({ promoted: commit });
    const { update, notes } = trustAfterPromotion(commit, config, {
      signers: this.persisted.signers,
      branch: this.persisted.branch,
      followed: this.o.repo.branch,
      signersGiven: !!this.o.signers,
      branchGiven: !!this.o.branchGiven,
    });
    for (const message of notes) this.publish({ kind: 'stage', source: 'controller', message });
    if (Object.keys(update).length > 0) this.persist(update);
  }

  private async machine(name: string, commit: string): Promise<Controller> {
    const known = this.machines.get(name);
    if (known) return known;
    const c = await this.o.open(name, commit);
    c.subscribe((e) => this.forward(name, e));
    this.machines.set(name, c);
    return c;
  }

  private retryLater(req: Request, reason: string): void {
    // A newer commit waits: it is rolled out instead, and this one is not tried again.
    if (this.queue.pending || this.stopping) return;
    const next = this.nextAttempt(req.commit);
    this.publish({ kind: 'warn', source: 'controller', message: `rollout of ${short(req.commit)}: ${reason}; trying again in ${Math.round(next.delay / 1000)} s` });
    this.retryAfter(req, next, reason);
  }

  /** A machine's event, for the fleet's subscribers (the API's event stream): with the machine named. */
  private forward(machine: string, e: Envelope): void {
    for (const fn of this.subscribers) fn({ ...e, machine });
  }

  protected publish(event: AnyEvent): void {
    this.o.emit(event);
    for (const fn of this.subscribers) fn({ event });
  }
}
