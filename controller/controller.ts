import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { build, type BuildResult } from '../builder/build.js';
import { gitSource } from '../builder/source.js';
import { planImages } from '../plan/compare.js';
import { renderText } from '../plan/render.js';
import { deploy, type DeployEvent } from '../deploy/deploy.js';
import { Journal, acquireLock, lastPromoted } from '../deploy/journal.js';
import type { Step } from '../deploy/journal.js';
import { targetFor, type LocalSettings } from '../deploy/target.js';
import { localCopies, scrub } from '../deploy/integrity.js';
import { readSlots } from '../deploy/medium.js';
import { connect } from '../deploy/ssh.js';
import { MANIFEST, readManifestSync } from '../image/manifest.js';
import { REASON, VERDICT, type Reason } from '../deploy/verdict.js';
import { InterruptedError, RambootError, describe } from '../lib/errors.js';
import type { Emit } from '../lib/events.js';
import { RAMBOOT_VERSION } from '../lib/package.js';
import type { ControllerEvent } from './events.js';
import { History, OUTCOME, type OutcomeName, type PhaseName, type ReconcileRecord } from './history.js';
import { configOf } from './open-machine.js';
import { Quarantine, type Quarantined } from './quarantine.js';
import { Queue, type Request, type Trigger } from './queue.js';
import type { RambootEvent } from './render.js';
import type { Repo } from './repo.js';
import { verifyCommit } from './signing.js';
import { Follower } from './follower.js';
import type { Persisted } from './persisted.js';
import { descends, trustAfterPromotion } from './trust.js';
import type { MachineState } from './state.js';

// The controller of one machine: it brings the machine to the newest commit of the
// branch and keeps it there. Every trigger feeds one queue; each reconcile is an ordered
// list of steps (verify → build → deploy → verdict), recorded on every path. One state
// (status()) is what the CLI, the API, the page and the metrics show.

export type AnyEvent = RambootEvent | ControllerEvent;

/** An event as subscribers see it: with the reconcile it belongs to, if any. */
export interface Envelope {
  /** The machine, in a repository of several. */
  machine?: string;
  reconcile?: string;
  commit?: string;
  event: AnyEvent;
}

export interface ControllerOptions {
  repo: Repo;
  state: MachineState;
  /** The controller's age identity, to decrypt secrets at build time. */
  identity?: string;
  /** How to reach the machine: the virtual NAS's port and power switch, or nothing (host.address). */
  reach: () => LocalSettings;
  /** An allowed-signers file given on the controller's command line: signing is required, and no commit changes the file. */
  signers?: string;
  /** Reconciles kept in the history. */
  keep: number;
  /** The branch came from --branch: commits' watch.branch does not change it. */
  branchGiven?: boolean;
  /** The machine's name in a repository of several (machines/NAME/): the commit is built as that machine sees it. */
  machine?: string;
  /**
   * Driven by a rollout (fleet.ts): a commit to try again later is reported in the
   * record and the rollout schedules the retry; the signature policy is the rollout's.
   */
  inRollout?: { signers: () => string | undefined; shared: () => Pick<ControllerStatus, 'paused' | 'desired'> };
  emit: Emit<AnyEvent>;
}

export interface ControllerStatus {
  machine: string;
  repo: string;
  branch: string;
  controller: { version: string; pid: number; startedAt: string };
  paused: boolean;
  signing: { required: boolean; signers?: string };
  desired?: { commit: string; subject?: string; author?: string };
  running?: { buildId?: string; commit?: string; since: string };
  current?: { reconcile: string; commit: string; phase?: PhaseName; startedAt?: string };
  pending?: { commit: string; trigger: Trigger; at: string };
  retry?: { commit: string; at: string; attempt: number; reason: string };
  lastAttempt?: ReconcileRecord;
  quarantine: Quarantined[];
  lastPoll?: Persisted['lastPoll'];
  lastWebhook?: Persisted['lastWebhook'];
  lastScrub?: Persisted['lastScrub'];
  /** Why what the machine runs can be changed by others than the repository's writers, if it can. */
  insecure?: string;
}

/** Deploy steps as the reconcile's phases. */
const STEP_PHASE: Record<Step, PhaseName> = {
  start: 'preflight',
  upload: 'upload',
  label: 'reboot',
  arm: 'reboot',
  reboot: 'reboot',
  verify: 'reboot',
  health: 'health',
  confirm: 'promote',
  promote: 'promote',
  disarm: 'rollback',
  rollback: 'rollback',
  cleanup: 'rollback',
  verdict: 'promote',
};

/** What a reconcile's steps hand on: the commit's record and request, and the build once made. */
interface Reconciling {
  record: ReconcileRecord;
  req: Request;
  committerEmail?: string;
  built?: BuildResult;
}

export class Controller extends Follower {
  readonly history: History;
  readonly quarantine: Quarantine;
  protected readonly queue: Queue;
  /** What the queue runs: reconcile(), its record dropped. */
  private readonly run = async (r: Request): Promise<void> => void (await this.reconcile(r));
  private current?: { record: ReconcileRecord; phase?: PhaseName };
  private readonly abort = new AbortController();
  /** A reconcile a rollout runs (reconcileNow), outside the queue: a stop waits for its build to clean up. */
  private inflight?: Promise<unknown>;

  constructor(private readonly o: ControllerOptions) {
    super(o.repo, o.state.dir);
    this.history = new History(o.state.dir, o.keep);
    this.quarantine = new Quarantine(o.state.dir);
    this.queue = new Queue(
      this.run,
      (replaced, by) => this.superseded(replaced, by),
      (r, err) => this.publish({ kind: 'warn', source: 'controller', message: `the reconcile of ${short(r.commit)} crashed: ${describe(err)}` }),
    );
  }

  protected quarantined(commit: string): boolean {
    return !!this.quarantine.holds(commit);
  }

  /** Lifts the quarantine of a commit and reconciles it, forced. */
  release(commit: string): Quarantined[] {
    const lifted = this.quarantine.release(commit);
    if (lifted.length > 0) this.notice(lifted[0]!.commit, { kind: 'release' }, { force: true });
    return lifted;
  }

  /** The deployed commit rebuilt with fresh packages (watch.refresh). */
  refresh(): void {
    const running = this.running();
    if (running?.commit) this.notice(running.commit, { kind: 'refresh' }, { refresh: true });
  }

  status(): ControllerStatus {
    const last = this.history.list(1)[0];
    const own = {
      machine: this.o.machine ?? this.o.state.dir.split('/').pop() ?? '',
      repo: this.o.repo.label,
      branch: this.o.repo.branch,
      controller: { version: RAMBOOT_VERSION, pid: process.pid, startedAt: this.startedAt },
      paused: this.persisted.paused,
      signing: { required: !!this.signers(), signers: this.signers() },
      desired: this.desired,
      running: this.running(),
      current: this.current && { reconcile: this.current.record.id, commit: this.current.record.commit, phase: this.current.phase, startedAt: this.current.record.startedAt },
      pending: this.queue.pending && { commit: this.queue.pending.commit, trigger: this.queue.pending.trigger, at: this.queue.pending.at },
      retry: this.retry && { commit: this.retry.commit, at: this.retry.at, attempt: this.retry.attempt, reason: this.retry.reason },
      lastAttempt: last,
      quarantine: this.quarantine.list(),
      lastPoll: this.persisted.lastPoll,
      lastWebhook: this.persisted.lastWebhook,
      lastScrub: this.persisted.lastScrub,
      insecure: /^http:/i.test(this.o.repo.label) && !this.signers() ? 'following a plain http:// remote without signed commits: anyone on the network path can change the machine' : undefined,
    };
    // In a rollout, pause and the branch's commit are the fleet's.
    return this.o.inRollout ? { ...own, ...this.o.inRollout.shared() } : own;
  }

  /**
   * The scheduled scrub (medium.scrub): hashes every file the medium's labels name and
   * repairs what the controller has copies of. Skipped while a reconcile runs: the deploy
   * verifies the medium itself before it writes a label.
   */
  async scrub(): Promise<void> {
    const running = this.running();
    if (this.current || this.stopping || !running?.buildId) return;
    const at = new Date().toISOString();
    const imageDir = join(this.o.state.images, running.buildId);
    const journal = await Journal.open(this.o.state.dir);
    const hostKey = journal.lastPromotedHostKey();
    if (!existsSync(join(imageDir, MANIFEST)) || !hostKey) return;
    let release: (() => void) | undefined;
    try {
      // Inside the try: a damaged manifest is a failed scrub on the page, not a crash of the controller.
      const manifest = readManifestSync(imageDir);
      const target = { ...targetFor(manifest.settings, this.o.reach()), hostKey };
      release = acquireLock(this.o.state.dir, target.name);
      const s = await connect(target);
      try {
        const medium = manifest.settings.boot.medium;
        const r = await scrub(s, medium, await readSlots(s, medium), localCopies([this.o.state.images]), true);
        this.persist({ lastScrub: { at, ok: r.damaged.length === 0, repaired: r.repaired, damaged: r.damaged.map((d) => d.path) } });
        if (r.repaired.length > 0 || r.damaged.length > 0) {
          this.publish({ kind: 'warn', source: 'controller', message: `scrub of ${target.name}:${medium}: repaired ${r.repaired.join(', ') || 'nothing'}${r.damaged.length ? `; still damaged, no copy: ${r.damaged.map((d) => d.path).join(', ')}` : ''}` });
        }
      } finally {
        s.close();
      }
    } catch (err) {
      this.persist({ lastScrub: { at, ok: false, repaired: [], damaged: [], error: describe(err) } });
    } finally {
      release?.();
    }
  }

  /** What the machine runs, as the journal's last promotion says. */
  running(): ControllerStatus['running'] {
    return runningBuild(this.o.state.dir);
  }

  /** Records left `running` by a controller that was killed: their deploy, if any, resumes from the journal. */
  async recover(): Promise<void> {
    for (const r of this.history.list()) {
      if (r.state !== 'running') continue;
      this.finish(r, OUTCOME.INTERRUPTED, REASON.INTERRUPTED, 'the controller stopped before the verdict; the deploy journal resumes the deploy');
    }
    const journal = await Journal.open(this.o.state.dir);
    const open = journal.open();
    if (open?.plan?.commit) this.notice(open.plan.commit, { kind: 'start', detail: 'resuming an interrupted deploy' }, { force: true });
  }

  drained(): Promise<void> {
    return this.queue.drained();
  }

  /**
   * SIGTERM or SIGINT: a build in progress stops and undoes its mounts (this resolves
   * once it has); a deploy in progress is left as it is: its journal makes the next
   * start resume it, so nothing is finished half-way.
   */
  async stop(signal: NodeJS.Signals): Promise<void> {
    this.stopping = true;
    this.cancelRetry();
    const current = this.current;
    this.abort.abort(signal);
    if (!current) return;
    this.finish(current.record, OUTCOME.INTERRUPTED, REASON.INTERRUPTED, `the controller stopped (${signal}); the next start resumes`);
    if (current.phase === 'build') await Promise.all([this.queue.drained(), this.inflight]);
  }

  /**
   * One reconcile of a commit, now, outside the controller's own queue: a rollout runs
   * the machines' reconciles itself, one commit at a time. Resolves with its record.
   */
  async reconcileNow(req: Request): Promise<ReconcileRecord | undefined> {
    await this.queue.drained();
    const running = this.reconcile(req);
    this.inflight = running;
    try {
      return await running;
    } finally {
      this.inflight = undefined;
    }
  }

  /**
   * The rollout of a commit stopped on another machine before it reached this one:
   * recorded as this machine's reconcile, and the commit quarantined here too, so that
   * the machine is not given it later without a person's release.
   */
  heldBack(req: Request, message: string, outcome: OutcomeName = OUTCOME.ROLLOUT_STOPPED, reason: Reason = REASON.ROLLOUT_STOPPED): ReconcileRecord {
    const now = new Date().toISOString();
    const record: ReconcileRecord = {
      id: this.history.newId(),
      commit: req.commit,
      trigger: req.trigger,
      noticedAt: req.at,
      phases: [{ name: 'queued', start: req.at, end: now }],
      state: 'running',
    };
    this.history.save(record);
    this.quarantineAndFinish(record, outcome, reason, message);
    return record;
  }

  // ---------------------------------------------------------------- the reconcile

  private async reconcile(req: Request): Promise<ReconcileRecord | undefined> {
    if (this.stopping) return undefined;
    const info = await this.o.repo.info(req.commit).catch(() => undefined);
    const record: ReconcileRecord = {
      id: this.history.newId(),
      commit: req.commit,
      author: info?.author,
      subject: info?.subject,
      trigger: req.trigger,
      noticedAt: req.at,
      startedAt: new Date().toISOString(),
      phases: [{ name: 'queued', start: req.at, end: new Date().toISOString() }],
      state: 'running',
      refresh: req.refresh,
    };
    this.current = { record };
    this.history.save(record);
    const r: Reconciling = { record, req, committerEmail: info?.committerEmail };
    try {
      for (const step of this.steps) if ((await step(r)) === 'done') return record;
      return record;
    } finally {
      this.current = undefined;
      this.history.prune();
    }
  }

  /**
   * A reconcile's steps, in order, as a Flux reconciler reads: each goes on to the next
   * or ends the reconcile, its record then saying how (quarantined, retry later, a verdict).
   */
  private readonly steps: ((r: Reconciling) => Promise<'next' | 'done'>)[] = [
    async (r) => ((await this.verify(r.record, r.req, r.committerEmail)) ? 'next' : 'done'),
    async (r) => {
      r.built = await this.build(r.record, r.req);
      return r.built ? 'next' : 'done';
    },
    async (r) => {
      await this.plan(r.record, r.built!);
      return 'next';
    },
    async (r) => {
      await this.deploy(r.record, r.built!, r.req);
      return 'done';
    },
  ];

  /**
   * Signature policy, then ancestry. Sets: untrusted-commit and not-descendant
   * (quarantined, nothing built); notes a rewritten branch when no signing is required.
   */
  private async verify(record: ReconcileRecord, req: Request, committerEmail: string | undefined): Promise<boolean> {
    const signers = this.signers();
    if (signers) {
      this.phase(record, 'verify');
      try {
        const check = await verifyCommit(await this.o.repo.rawCommit(record.commit), committerEmail ?? '', signers);
        if (!check.ok) {
          this.quarantineAndFinish(record, OUTCOME.UNTRUSTED, REASON.UNTRUSTED_COMMIT, `untrusted commit: ${check.reason}; nothing was built`);
          return false;
        }
      } catch (err) {
        this.quarantineAndFinish(record, OUTCOME.UNTRUSTED, REASON.SIGNATURE_POLICY, `untrusted commit: ${describe(err)}; nothing was built`);
        return false;
      }
    }
    const running = this.running()?.commit;
    if (!running || (await descends(this.o.repo.gitdir, record.commit, running))) return true;
    // An older signed commit is as well signed as a new one: without this, whoever can
    // move the branch could bring back a revoked key or a vulnerable package (a rollback attack).
    if (signers && !req.force) {
      this.quarantineAndFinish(
        record,
        OUTCOME.UNTRUSTED,
        REASON.NOT_DESCENDANT,
        `not a descendant of the running build (${short(running)}): the branch was rewritten or moved back; nothing was built (\`ramboot release ${short(record.commit)}\` deploys it anyway)`,
      );
      return false;
    }
    record.rewritten = { from: running };
    this.history.save(record);
    this.publish({ kind: 'warn', source: 'controller', message: `the branch was rewritten: ${short(record.commit)} does not descend from the running ${short(running)}; the machine goes back to it` }, record);
    return true;
  }

  /** Sets: build-failed (quarantined), retry-later (a mirror unreachable), interrupted. */
  private async build(record: ReconcileRecord, req: Request): Promise<BuildResult | undefined> {
    this.phase(record, 'build');
    try {
      const b = await build({
        repoDir: this.o.repo.gitdir,
        rev: record.commit,
        machine: this.o.machine,
        imagesDir: this.o.state.images,
        cacheDir: this.o.state.cache,
        origin: this.o.repo.label,
        identity: this.o.identity,
        fresh: req.refresh,
        emit: (e) => this.publish(e, record),
        signal: this.abort.signal,
      });
      record.buildId = b.buildId;
      return b;
    } catch (err) {
      if (err instanceof InterruptedError) return undefined;
      if (err instanceof RambootError && err.kind === 'retry') {
        this.retryLater(record, req, describe(err));
        return undefined;
      }
      const [first, ...rest] = describe(err).split('\n');
      record.output = rest.join('\n') || undefined;
      this.quarantineAndFinish(record, OUTCOME.BUILD_FAILED, REASON.BUILD_FAILED, `build failed: ${first}`);
      return undefined;
    }
  }

  /**
   * What this build changes on the machine, against the build it runs now (as
   * `ramboot plan` prints it). A plan is for people; one that cannot be made (the
   * running build's image was pruned) is noted and the deploy goes on.
   */
  private async plan(record: ReconcileRecord, built: BuildResult): Promise<void> {
    const against = this.running()?.buildId;
    if (!against || against === built.buildId) return;
    const baseDir = join(this.o.state.images, against);
    if (!existsSync(join(baseDir, MANIFEST))) return;
    this.phase(record, 'plan');
    try {
      const p = await planImages(baseDir, built.imageDir, { repoDir: this.o.repo.gitdir });
      record.plan = { against, changes: p.changes, text: renderText(p), json: p };
      this.history.save(record);
      const what = p.changes === 0 ? 'no change to the machine' : `${p.changes} change${p.changes === 1 ? '' : 's'} to the machine`;
      this.publish({ kind: 'stage', source: 'controller', message: `plan: ${what} against build ${against}` }, record);
    } catch (err) {
      this.publish({ kind: 'warn', source: 'controller', message: `no plan for build ${built.buildId}: ${describe(err)}` }, record);
    }
  }

  private async deploy(record: ReconcileRecord, built: BuildResult, req: Request): Promise<void> {
    const held = req.refresh ? this.quarantine.holds(record.commit, built.buildId) : undefined;
    if (held?.buildId) {
      this.finish(record, OUTCOME.PROMOTED, REASON.REFRESH_QUARANTINED, `build ${built.buildId} was rolled back before; the running build stays`);
      return;
    }
    const manifest = built.manifest;
    // A commit that changed only other machines' files builds this one from the same inputs (its
    // view of the tree, its packages): only the release file, which names the commit, would differ.
    const running = this.o.machine ? this.running()?.buildId : undefined;
    const runs = running && existsSync(join(this.o.state.images, running, MANIFEST)) ? readManifestSync(join(this.o.state.images, running)) : undefined;
    if (runs && runs.inputsHash === manifest.inputsHash && running !== built.buildId) {
      this.finish(record, OUTCOME.PROMOTED, REASON.NO_CHANGE, `nothing changes on ${this.o.machine}: build ${built.buildId} has the inputs of build ${running}, which it runs; not deployed`);
      return;
    }
    let target: ReturnType<typeof targetFor>;
    try {
      target = targetFor(manifest.settings, this.o.reach());
    } catch (err) {
      // No SSH key to reach the machine with: a person sets host.identity; nothing was touched.
      this.finish(record, OUTCOME.UPLOAD_FAILED, REASON.REFUSED, describe(err));
      return;
    }
    const journal = await Journal.open(this.o.state.dir);
    let release: () => void;
    try {
      release = acquireLock(this.o.state.dir, target.name);
    } catch (err) {
      this.retryLater(record, req, describe(err));
      return;
    }
    try {
      const known = [journal.lastPromotedHostKey()].filter((k): k is string => !!k);
      const result = await deploy({
        target,
        journal,
        imageDir: built.imageDir,
        manifest,
        previousHostKeys: known,
        force: req.force,
        images: [this.o.state.images],
        onEvent: (e) => this.onDeployEvent(record, e),
      });
      // Stopped meanwhile: the record already says interrupted, and the next start takes
      // the deploy up from its journal.
      if (this.stopping) return;
      record.bytesSent = result.bytesSent;
      record.imageBytes = result.imageBytes;
      record.output = result.outcome.output;
      const o = result.outcome;
      if (o.verdict === VERDICT.UPLOAD_FAILED && (o.reason === REASON.CONNECT_FAILED || o.reason === REASON.PREFLIGHT_FAILED)) {
        this.retryLater(record, req, o.message);
      } else if (o.verdict === VERDICT.NOT_HEALTHY || o.verdict === VERDICT.UNREACHABLE) {
        this.quarantineAndFinish(record, o.verdict, o.reason, o.message, req.refresh ? built.buildId : undefined);
      } else {
        // The promoted commit's signing policy is in force before its verdict is visible.
        if (o.verdict === VERDICT.PROMOTED) await this.trust(record.commit);
        this.finish(record, o.verdict, o.reason, o.message);
      }
    } catch (err) {
      if (this.stopping) return;
      // The deploy could not reach a verdict now (it stays open in the journal), or was refused.
      if (err instanceof RambootError && err.kind === 'person') {
        this.finish(record, OUTCOME.UPLOAD_FAILED, REASON.REFUSED, describe(err));
      } else {
        this.retryLater(record, req, describe(err));
      }
    } finally {
      release();
    }
  }

  private onDeployEvent(record: ReconcileRecord, e: DeployEvent): void {
    if (record.state === 'done') return;
    if (e.kind === 'step') this.phase(record, STEP_PHASE[e.step]);
    this.publish(e, record);
  }

  /**
   * After a promotion, the commit's watch.signers becomes the policy for the next ones
   * and its watch.branch the branch of the next start: it passed the policy in force.
   * Signing is never turned off by a commit (only by `ramboot up --signers none`).
   */
  private async trust(commit: string): Promise<void> {
    // A rollout keeps one policy for every machine (fleet.ts).
    if (this.o.inRollout) return;
    const config = await configOf(await gitSource(this.o.repo.gitdir, commit)).catch(() => undefined);
    if (!config) return;
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

  /** The signature policy in effect: the command line's, else the last trusted commit's. */
  signers(): string | undefined {
    if (this.o.inRollout) return this.o.inRollout.signers();
    return this.o.signers ?? this.persisted.signers;
  }

  // ---------------------------------------------------------------- bookkeeping

  private phase(record: ReconcileRecord, name: PhaseName): void {
    const now = new Date().toISOString();
    const last = record.phases.at(-1);
    if (last?.name === name) return;
    if (last && !last.end) last.end = now;
    record.phases.push({ name, start: now });
    if (this.current?.record === record) this.current.phase = name;
    this.history.save(record);
    this.publish({ kind: 'phase', source: 'controller', reconcile: record.id, commit: record.commit, phase: name }, record);
  }

  private finish(record: ReconcileRecord, outcome: OutcomeName, reason: Reason, message: string): void {
    // One verdict per record: a deploy that ends after a stop marked it interrupted changes nothing.
    if (record.state === 'done') return;
    const now = new Date().toISOString();
    const last = record.phases.at(-1);
    if (last && !last.end) last.end = now;
    const rewritten = record.rewritten ? ` (the branch was rewritten: ${short(record.commit)} does not descend from ${short(record.rewritten.from)}, which ran before)` : '';
    message = `${message}${rewritten}`;
    Object.assign(record, { state: 'done', outcome, reason, message, endedAt: now });
    if (outcome !== OUTCOME.RETRY && this.retried?.commit === record.commit) this.retried = undefined;
    this.history.save(record);
    this.publish({ kind: 'reconciled', source: 'controller', reconcile: record.id, commit: record.commit, outcome, message }, record);
  }

  private quarantineAndFinish(record: ReconcileRecord, outcome: OutcomeName, reason: Reason, message: string, buildId?: string): void {
    this.quarantine.add({ commit: record.commit, buildId, outcome, message, at: new Date().toISOString(), reconcile: record.id });
    this.finish(record, outcome, reason, `${message} (quarantined: not deployed again unless released)`);
  }

  private retryLater(record: ReconcileRecord, req: Request, reason: string): void {
    const next = this.nextAttempt(req.commit);
    if (this.o.inRollout) {
      this.finish(record, OUTCOME.RETRY, REASON.RETRY_LATER, `${reason}; the rollout tries again later`);
      return;
    }
    this.finish(record, OUTCOME.RETRY, REASON.RETRY_LATER, `${reason}; trying again in ${Math.round(next.delay / 1000)} s`);
    if (!this.stopping) this.retryAfter(req, next, reason);
  }

  private superseded(replaced: Request, by: Request): void {
    const now = new Date().toISOString();
    const record: ReconcileRecord = {
      id: this.history.newId(),
      commit: replaced.commit,
      trigger: replaced.trigger,
      noticedAt: replaced.at,
      phases: [{ name: 'queued', start: replaced.at, end: now }],
      state: 'done',
      outcome: OUTCOME.SUPERSEDED,
      reason: REASON.SUPERSEDED,
      message: `superseded by ${short(by.commit)} before it started`,
      endedAt: now,
    };
    void this.o.repo.info(replaced.commit).then(
      (i) => this.history.save({ ...record, author: i.author, subject: i.subject }),
      () => this.history.save(record),
    );
    this.publish({ kind: 'superseded', source: 'controller', commit: replaced.commit, by: by.commit });
  }

  protected publish(event: AnyEvent, record?: ReconcileRecord): void {
    if (record) this.history.log(record.id, event);
    this.o.emit(event);
    const envelope: Envelope = { machine: this.o.machine, reconcile: record?.id, commit: record?.commit, event };
    for (const fn of this.subscribers) fn(envelope);
  }

}


/** What the machine runs, as the journal's last promotion says. */
export function runningBuild(stateDir: string): ControllerStatus['running'] {
  const v = lastPromoted(stateDir);
  return v && { buildId: v.buildId, commit: v.commit, since: v.ts };
}

export function short(commit: string): string {
  return commit.slice(0, 12);
}
