import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MANIFEST, type Manifest } from '../image/manifest.js';
import { RambootError, UsageError } from '../lib/errors.js';
import type { WarnEvent } from '../lib/events.js';
import { runHealth, type HealthEvent } from './health.js';
import { decideStart, lastOf, type DeployHistory, type DeployPlan, type Entry, type Journal, type JournalRecord, type Step } from './journal.js';
import { basesFor, candidateFiles, PreflightError, armOnce, checkSpace, clearOnce, inspectMedium, planUpload, readSlots, removeCutWipe, removeUnreferenced, uploadFiles, wipeFreeSpace, writeCfg, type Firmware } from './medium.js';
import { readRunning, type Running } from './running.js';
import { observe, powerCycle, requestReboot, waitUntil, type Observation, type WaitEvent } from './reboot.js';
import { contentPath, promoted, withCandidate, withoutCandidate, type SlotEntry, type SlotName, type SlotTable } from './slots.js';
import { HostKeyMismatchError, SealedSecretsUnavailableError, connect, shq, type Session, type Target } from './ssh.js';
import { EXIT_OTHER_BOOT, confirmCommand } from './trial.js';
import { MediumDamagedError, findDamage, localCopies, repair, verifyAndRepair } from './integrity.js';
import { exposure } from '../image/medium.js';
import { REASON, VERDICT, VERDICT_EXIT_CODE, type Outcome, type Reason, type Verdict } from './verdict.js';

// The deploy protocol (docs/ARCHITECTURE.md, "Deploy") as a table of steps, split at the
// trial boundary: those before it, the trial, and the endings. Each step is recorded in
// the journal before it is taken and returns the next one; the driver records that and
// goes on until a verdict. A step is safe to repeat: a resumed deploy re-enters the
// last recorded step, which looks at the machine before it acts.

export type DeployEvent =
  | { kind: 'step'; step: Step; deploy: string; message: string }
  | { kind: 'running'; host: string; running: Running }
  | { kind: 'upload'; file: string; sent: number; total: number; basis?: string }
  | { kind: 'wait'; what: string; elapsedMs: number; observation: Observation }
  | { kind: 'check'; event: HealthEvent }
  | { kind: 'verdict'; outcome: Outcome; bytesSent?: number; imageBytes?: number }
  | WarnEvent;

export interface DeployOptions {
  /** Where and how to reach the machine; the host keys come from the image. */
  target: Omit<Target, 'hostKey' | 'previousHostKeys'>;
  journal: Journal;
  imageDir: string;
  /** The image's manifest: it carries the commit's boot medium, trial timings and health checks. */
  manifest: Manifest;
  /** The key the machine presents now, when it differs from the image's (a rotated host key). */
  previousHostKeys?: string[];
  /** Deploy a build that was rolled back before. */
  force?: boolean;
  /** Directories of the controller's images: where a damaged file on the medium is repaired from. */
  images?: string[];
  onEvent?: (e: DeployEvent) => void;
}

export interface DeployResult {
  deploy: string;
  buildId?: string;
  outcome: Outcome;
  exitCode: number;
  bytesSent?: number;
  imageBytes?: number;
}

/**
 * Deploys an image: finishes an open deploy first (whatever its build), then runs the
 * protocol for this one. Throws only when the deploy cannot reach a verdict now (it
 * stays open in the journal and the next run resumes it) or the request is refused.
 */
export async function deploy(opts: DeployOptions): Promise<DeployResult> {
  const req = { buildId: opts.manifest.buildId, commit: opts.manifest.commit, force: opts.force };
  for (;;) {
    const decision = decideStart(opts.journal.deploys(), req);
    switch (decision.kind) {
      case 'refuse': {
        const v = decision.deploy.verdict!;
        throw new UsageError(
          `failed to deploy build ${req.buildId} to ${opts.target.name}: it was rolled back on ${v.ts} (${v.outcome.message}); ` +
            'it is not deployed again unless forced (--force)',
          { step: 'deploy', host: opts.target.name, input: req.buildId },
        );
      }
      case 'supersede': {
        const rec = await opts.journal.record(decision.deploy.id, {
          step: 'disarm',
          outcome: {
            verdict: VERDICT.UPLOAD_FAILED,
            reason: REASON.SUPERSEDED,
            message: `interrupted before the trial boot and superseded by build ${req.buildId}`,
          },
        });
        await drive(context(opts, decision.deploy), rec);
        continue;
      }
      case 'resume': {
        const result = await drive(context(opts, decision.deploy), decision.deploy.last);
        if (decision.deploy.plan?.buildId === req.buildId) return result;
        continue;
      }
      case 'fresh': {
        const plan = makePlan(opts);
        const id = `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
        const rec = await opts.journal.record(id, { step: 'start', plan });
        return drive(context(opts, { id, plan, entries: [rec], last: rec }), rec);
      }
    }
  }
}

function sealedManifest(file: string): boolean {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as Manifest).sealed !== undefined;
  } catch {
    return false;
  }
}

/** Records a build that produced no image, so the journal and status show it. */
export async function recordBuildFailure(journal: Journal, message: string, commit?: string): Promise<DeployResult> {
  const id = `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(3).toString('hex')}`;
  const outcome: Outcome = { verdict: VERDICT.BUILD_FAILED, reason: REASON.BUILD_FAILED, message };
  await journal.record(id, { step: 'verdict', outcome, commit });
  return { deploy: id, outcome, exitCode: VERDICT_EXIT_CODE[outcome.verdict] };
}

/** The image's boot files as content files of the medium, in INITRD order. */
function makePlan(opts: DeployOptions): DeployPlan {
  const { manifest: m, target } = opts;
  const config = m.settings;
  if (!m.hostKey) {
    throw new UsageError(`failed to deploy build ${m.buildId}: the image has no host key to pin (its host key secret, secrets.host_key, is missing)`, {
      step: 'deploy',
      host: target.name,
      input: opts.imageDir,
    });
  }
  if (config.trial.confirm_timeout <= config.health.deadline) {
    // Not refused: a healthy trial usually confirms long before the deadline. But a slow
    // one is rebooted by the agent mid-check and ends as "unreachable".
    opts.onEvent?.({
      kind: 'warn',
      source: 'deploy',
      message: `trial.confirm_timeout (${config.trial.confirm_timeout / 1000} s) is not longer than health.deadline (${config.health.deadline / 1000} s) ` +
        'plus the boot time: the agent may reboot a slow but healthy trial before it is confirmed',
    });
  }
  const { kernel, initrds } = candidateFiles(opts.imageDir, m);
  const files = [kernel, ...initrds];
  const secrets = m.segments.find((x) => x.name === 'secrets');
  return {
    host: target.name,
    buildId: m.buildId,
    commit: m.commit,
    imageDir: opts.imageDir,
    imageBytes: files.reduce((n, f) => n + f.bytes, 0),
    candidate: { buildId: m.buildId, kernel: kernel.path, initrds: initrds.map((f) => f.path), append: m.append },
    files,
    hostKey: m.hostKey,
    previousHostKeys: (opts.previousHostKeys ?? []).filter((k) => k !== m.hostKey),
    medium: config.boot.medium,
    firmware: config.boot.firmware,
    health: config.health,
    trial: { confirm_timeout: config.trial.confirm_timeout, reboot_deadline: config.trial.reboot_deadline },
    secretsFile: secrets && contentPath(secrets.sha256, 'cpio.zst'),
    exposure: m.medium && exposure(m.medium) && `image ${m.buildId}'s fstab line "${m.medium.line}" ${exposure(m.medium)} (root/etc/fstab)`,
    ...(m.sealed ? { sealed: true } : {}),
  };
}

interface Ctx {
  id: string;
  plan: DeployPlan;
  /** sha256 → the controller's copy of that boot file. */
  copies: () => Map<string, string>;
  /** True when the controller has the build's image and it seals its secrets; false for an unknown build. */
  sealedBuild: (buildId: string) => boolean;
  /**
   * The same, also from the images beside the candidate's: a file a delta is made from
   * needs no trust (the machine checks the result by hash), so any build the controller
   * can read will do. Repairs take only the controller's own images.
   */
  basisCopies: () => Map<string, string>;
  history: DeployHistory;
  target: Target;
  journal: Journal;
  emit: (e: DeployEvent) => void;
  session(): Promise<Session>;
  dropSession(): void;
}

function context(opts: DeployOptions, history: DeployHistory): Ctx {
  const plan = history.plan;
  if (!plan) {
    throw new RambootError(`failed to resume deploy ${history.id}: the journal ${opts.journal.file} has no start entry for it`, {
      step: 'resume',
      host: opts.target.name,
      input: opts.journal.file,
    });
  }
  const target: Target = { ...opts.target, hostKey: plan.hostKey, previousHostKeys: plan.previousHostKeys };
  let cached: Session | undefined;
  let copies: Map<string, string> | undefined;
  let basisCopies: Map<string, string> | undefined;
  return {
    id: history.id,
    plan,
    copies: () => (copies ??= localCopies(opts.images ?? [], plan.files)),
    basisCopies: () => (basisCopies ??= localCopies([...(opts.images ?? []), dirname(plan.imageDir)], plan.files)),
    sealedBuild: (buildId) => [...(opts.images ?? []), dirname(plan.imageDir)].some((dir) => sealedManifest(join(dir, buildId, MANIFEST))),
    history,
    target,
    journal: opts.journal,
    emit: (e) => opts.onEvent?.(e),
    async session() {
      if (!cached || cached.isClosed) cached = await connect(target);
      return cached;
    },
    dropSession() {
      cached?.close();
      cached = undefined;
    },
  };
}

async function drive(ctx: Ctx, first: JournalRecord): Promise<DeployResult> {
  let rec = first;
  try {
    while (rec.step !== 'verdict') {
      const step = stepOf(ctx, rec);
      ctx.emit({ kind: 'step', step: rec.step, deploy: ctx.id, message: step.says(ctx, rec) });
      const next = await step.run(ctx, rec);
      rec = await ctx.journal.record(ctx.id, next);
      ctx.history.entries.push(rec);
      ctx.history.last = rec;
    }
  } finally {
    ctx.dropSession();
  }
  const { outcome, bytesSent, imageBytes } = rec;
  ctx.emit({ kind: 'verdict', outcome, bytesSent, imageBytes });
  return { deploy: ctx.id, buildId: ctx.plan.buildId, outcome, exitCode: VERDICT_EXIT_CODE[outcome.verdict], bytesSent, imageBytes };
}

type RecordOf<S extends Step> = Extract<JournalRecord, { step: S }>;

/** A step of the protocol: what it says while it runs, and what it does (its next entry). */
interface StepSpec<S extends Step> {
  says: (ctx: Ctx, rec: RecordOf<S>) => string;
  run: (ctx: Ctx, rec: RecordOf<S>) => Promise<Entry>;
}
type Steps<K extends Step> = { [S in K]: StepSpec<S> };

/** Before the trial boot: a failure ends the deploy with the default untouched (beforeTrial). */
const BEFORE_TRIAL: Steps<'start' | 'upload' | 'label' | 'arm'> = {
  /** Preflight, nothing written: the medium, free space, the boot loader, what runs now. */
  start: { says: (ctx) => `checking ${ctx.plan.host} for build ${ctx.plan.buildId}`, run: (ctx) => beforeTrial(() => preflight(ctx)) },
  /** The missing files under temporary names (or made from a delta), verified, renamed; every file the new labels name hashed. */
  upload: { says: (ctx) => `uploading to ${ctx.plan.host}`, run: (ctx) => beforeTrial(() => upload(ctx)) },
  /** The labels with `new` naming the candidate (on UEFI a counted entry, which arms it). */
  label: {
    says: () => 'writing the new label',
    run: (ctx, rec) =>
      beforeTrial(async () => {
        await writeCfg(await ctx.session(), ctx.plan.medium, rec.slots, firmwareOf(ctx));
        return { step: 'arm' };
      }),
  },
  /** The next boot, and only that one, boots `new` (extlinux --once on BIOS). */
  arm: {
    says: () => 'arming the boot-once entry',
    run: (ctx) =>
      beforeTrial(async () => {
        const s = await ctx.session();
        await armOnce(s, ctx.plan.medium, 'new', firmwareOf(ctx));
        return { step: 'reboot', bootId: (await readRunning(s)).bootId };
      }, REASON.ARM_FAILED),
  },
};

/** The trial: a machine lost here is the rollback's to bring back (inTrial). */
const TRIAL: Steps<'reboot' | 'verify' | 'health' | 'confirm'> = {
  /** Reboot the machine, which runs boot `bootId`, and wait for another boot. */
  reboot: { says: (ctx) => `rebooting ${ctx.plan.host} into the trial`, run: (ctx, rec) => inTrial(() => reboot(ctx, rec.bootId)) },
  /** The new boot runs the candidate from `new`. */
  verify: { says: () => 'verifying the trial boot', run: (ctx, rec) => inTrial(() => verify(ctx, rec.previousBootId)) },
  /** The image's health checks on the trial boot. */
  health: { says: () => 'running health checks', run: (ctx, rec) => inTrial(() => health(ctx, rec.bootId)) },
  /** Tell the trial agent the boot is good, before its confirm timeout reboots it. */
  confirm: { says: () => 'confirming the trial', run: (ctx, rec) => inTrial(() => confirm(ctx, rec.bootId)) },
};

/** After the trial, or instead of it: each ends with the machine booting lts or the promoted candidate. */
const ENDINGS: Steps<'promote' | 'disarm' | 'rollback' | 'cleanup'> = {
  /** lts names the candidate, old the former default; files no label names are deleted. */
  promote: { says: (ctx) => `promoting build ${ctx.plan.buildId}`, run: (ctx, rec) => promote(ctx, rec.slots) },
  /** The trial never began: the once-entry (BIOS) and the `new` label are cleared. */
  disarm: { says: (_, rec) => `disarming the trial: ${rec.outcome.message}`, run: (ctx, rec) => disarm(ctx, rec.outcome) },
  /** The machine back on lts: reboot, wait for the agent, power cycle; verified. */
  rollback: { says: (_, rec) => `rolling back: ${rec.outcome.message}`, run: (ctx, rec) => rollback(ctx, rec.outcome) },
  /** The candidate leaves the labels, then its files the medium. */
  cleanup: { says: () => 'removing the candidate from the medium', run: (ctx, rec) => cleanup(ctx, rec.outcome) },
};

const STEPS: Steps<Exclude<Step, 'verdict'>> = { ...BEFORE_TRIAL, ...TRIAL, ...ENDINGS };

/** The table's entry for a record; a verdict ends the deploy and has none. */
function stepOf(ctx: Ctx, rec: JournalRecord): StepSpec<Step> {
  if (rec.step === 'verdict') throw new RambootError(`failed to continue deploy ${ctx.id}: it is already over`, { step: 'deploy', host: ctx.plan.host });
  // Each entry takes the records of its own step; `rec` is one, so the lookup is sound.
  return STEPS[rec.step] as unknown as StepSpec<Step>;
}

/**
 * Before the reboot, a failure ends the deploy with the default untouched (after
 * disarming). Errors that are not RambootErrors are bugs: they propagate and leave the
 * deploy open.
 */
async function beforeTrial(fn: () => Promise<Entry>, reason: Reason = REASON.UPLOAD_FAILED): Promise<Entry> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    if (err instanceof MediumDamagedError) return { step: 'disarm', outcome: failed(VERDICT.MEDIUM_DAMAGED, REASON.MEDIUM_DAMAGED, err) };
    const why =
      err instanceof SealedSecretsUnavailableError
        ? REASON.SEALED_SECRETS_UNAVAILABLE
        : err instanceof HostKeyMismatchError
        ? REASON.HOST_KEY_MISMATCH
        : err instanceof PreflightError
          ? REASON.PREFLIGHT_FAILED
          : err.step === 'connect'
            ? REASON.CONNECT_FAILED
            : reason;
    return { step: 'disarm', outcome: failed(VERDICT.UPLOAD_FAILED, why, err) };
  }
}

/** An outcome from an error: its first line is the verdict's reason, the command output goes along. */
function failed(v: Verdict, reason: Reason, err: RambootError): Outcome {
  const [first, ...rest] = err.message.split('\n');
  return { verdict: v, reason, message: first!, output: err.output ?? (rest.join('\n') || undefined) };
}

/** During the trial, losing the machine hands it to the rollback, which waits for the agent. */
async function inTrial(fn: () => Promise<Entry>): Promise<Entry> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    return { step: 'rollback', outcome: failed(VERDICT.UNREACHABLE, REASON.TRIAL_UNREACHABLE, err) };
  }
}

/** Nothing is written here: the medium, free space, extlinux and what runs now are checked. */
async function preflight(ctx: Ctx): Promise<Entry> {
  const s = await ctx.session();
  const running = await readRunning(s);
  ctx.emit({ kind: 'running', host: ctx.plan.host, running });
  const state = await inspectMedium(s, ctx.plan.medium, firmwareOf(ctx));
  if (!state.cfg.managed) {
    throw new PreflightError(
      'not-managed',
      ctx.plan.host,
      ctx.plan.medium,
      `${firmwareOf(ctx) === 'uefi' ? 'loader/entries has no lts entry' : 'boot/syslinux/syslinux.cfg is not'} managed by ramboot (run \`ramboot bootloader install --host ${ctx.plan.host}\` first)`,
    );
  }
  if (ctx.plan.exposure) {
    throw new PreflightError('secrets-exposed', ctx.plan.host, ctx.plan.medium, `refusing an image whose secrets others could read on the machine: ${ctx.plan.exposure}`);
  }
  const lts = state.cfg.slots.lts!;
  // After a promotion the machine still runs the trial boot, from `new`: the same build.
  if (lts.buildId === ctx.plan.buildId && (runsEntry(running, 'lts', lts) || runsEntry(running, 'new', lts))) {
    return verdict(ctx, { verdict: VERDICT.PROMOTED, reason: REASON.ALREADY_RUNNING, message: `build ${ctx.plan.buildId} already is the default and running` });
  }
  checkSpace(state, planUpload(state, ctx.plan.files), ctx.plan.host);
  return { step: 'upload' };
}

async function upload(ctx: Ctx): Promise<Entry> {
  const s = await ctx.session();
  const state = await inspectMedium(s, ctx.plan.medium, firmwareOf(ctx));
  const plan = planUpload(state, ctx.plan.files);
  checkSpace(state, plan, ctx.plan.host);
  const sent = await uploadFiles(s, ctx.plan.medium, plan, {
    onProgress: (p) => ctx.emit({ kind: 'upload', ...p }),
    bases: basesFor(state.cfg.slots, ctx.plan.candidate, ctx.basisCopies()),
    onWarn: (message) => ctx.emit({ kind: 'warn', source: 'deploy', message }),
    onStep: (message) => ctx.emit({ kind: 'step', step: 'upload', deploy: ctx.id, message }),
  });
  const slots = withCandidate(state.cfg.slots, ctx.plan.candidate);
  await checkSecretsPrivate(ctx, s);
  ctx.emit({ kind: 'step', step: 'upload', deploy: ctx.id, message: 'verifying every file the labels will name' });
  const repaired = await verifyAndRepair(s, ctx.plan.medium, slots, ctx.copies());
  if (repaired.length > 0) ctx.emit({ kind: 'warn', source: 'deploy', message: `the medium was damaged: repaired ${repaired.join(', ')} from the controller's copy` });
  return { step: 'label', slots, bytesSent: sent, ...(repaired.length > 0 ? { repaired } : {}) };
}

async function reboot(ctx: Ctx, bootId: string): Promise<Entry> {
  const { reboot_deadline } = ctx.plan.trial;
  // Re-entered after a crash, the reboot may already have happened: only the boot it armed is rebooted.
  const now = await observe(ctx.target);
  if (now.reachable && now.running.bootId === bootId) {
    try {
      await requestReboot(await ctx.session());
    } catch (err) {
      if (!(err instanceof RambootError)) throw err;
      return { step: 'disarm', outcome: failed(VERDICT.UPLOAD_FAILED, REASON.REBOOT_FAILED, err) };
    }
    ctx.dropSession();
  }
  const waited = await waitUntil(ctx.target, reboot_deadline, (r) => r.bootId !== bootId, waitEvents(ctx, `${ctx.plan.host} to come back from the reboot`));
  if (waited.running) return { step: 'verify', previousBootId: bootId };
  if (waited.last.reachable) {
    return {
      step: 'disarm',
      outcome: { verdict: VERDICT.UPLOAD_FAILED, reason: REASON.REBOOT_FAILED, message: `${ctx.plan.host} did not reboot within ${reboot_deadline / 1000} s` },
    };
  }
  return {
    step: 'rollback',
    outcome: {
      verdict: VERDICT.UNREACHABLE,
      reason: REASON.TRIAL_UNREACHABLE,
      message: `the trial boot did not answer within trial.reboot_deadline (${reboot_deadline / 1000} s): ${waited.last.error}`,
    },
  };
}

async function verify(ctx: Ctx, previousBootId: string): Promise<Entry> {
  const waited = await waitUntil(ctx.target, ctx.plan.trial.reboot_deadline, (r) => r.bootId !== previousBootId, waitEvents(ctx, `${ctx.plan.host} to answer`));
  if (!waited.running) {
    const error = waited.last.reachable ? 'it is still on the boot before the reboot' : waited.last.error;
    return { step: 'rollback', outcome: { verdict: VERDICT.UNREACHABLE, reason: REASON.TRIAL_UNREACHABLE, message: `the trial boot stopped answering: ${error}` } };
  }
  const r = waited.running;
  const want = ctx.plan.buildId;
  if (r.slot === 'new' && r.build === want && r.cmdlineBuild === want) return { step: 'health', bootId: r.bootId };
  if (r.slot === 'new') {
    return {
      step: 'rollback',
      outcome: {
        verdict: VERDICT.NOT_HEALTHY,
        reason: REASON.WRONG_BUILD,
        message: `slot new runs build ${r.build ?? '(no /etc/ramboot-release)'} (kernel command line: ${r.cmdlineBuild}), expected ${want}`,
        check: 'identity',
      },
    };
  }
  return {
    step: 'rollback',
    outcome: {
      verdict: VERDICT.UNREACHABLE,
      reason: REASON.TRIAL_BOOTED_LTS,
      message: `the machine came back on slot ${r.slot ?? '(unknown)'} (build ${r.cmdlineBuild ?? r.build ?? 'unknown'}): the trial boot failed before it answered`,
    },
  };
}

async function health(ctx: Ctx, bootId: string): Promise<Entry> {
  const report = await runHealth({
    target: ctx.target,
    checks: ctx.plan.health.checks,
    deadlineMs: ctx.plan.health.deadline,
    settleMs: ctx.plan.health.settle,
    onAttempt: (event) => ctx.emit({ kind: 'check', event }),
  });
  if (report.ok) return { step: 'confirm', bootId };
  // A check fails for good reason when the machine left the trial under it (the agent
  // fired, the power went): then it is down or back on another boot, not the trial's.
  const back = await waitUntil(ctx.target, ctx.plan.trial.reboot_deadline, () => true, waitEvents(ctx, `${ctx.plan.host} to answer after the failed check`));
  const now = back.last;
  if (!now.reachable || now.running.bootId !== bootId) {
    return {
      step: 'rollback',
      outcome: {
        verdict: VERDICT.UNREACHABLE,
        reason: REASON.LEFT_TRIAL,
        message: `the machine left the trial boot during the health checks (${now.reachable ? `now on slot ${now.running.slot}` : `it does not answer: ${now.error}`})`,
      },
    };
  }
  const f = report.failed!;
  return {
    step: 'rollback',
    bootId,
    outcome: {
      verdict: VERDICT.NOT_HEALTHY,
      reason: REASON.CHECK_FAILED,
      message: `health check "${f.name}" failed after ${f.attempts} attempt${f.attempts === 1 ? '' : 's'}: ${f.output.split('\n')[0]}`,
      check: f.name,
      output: f.output,
    },
  };
}

async function confirm(ctx: Ctx, bootId: string): Promise<Entry> {
  const s = await ctx.session();
  const r = await s.exec(confirmCommand(bootId));
  if (r.code === 0) return { step: 'promote', slots: promoted(await readSlots(s, ctx.plan.medium), ctx.plan.candidate) };
  const output = `${r.stdout}${r.stderr}`.trim();
  if (r.code === EXIT_OTHER_BOOT) {
    return { step: 'rollback', outcome: { verdict: VERDICT.UNREACHABLE, reason: REASON.LEFT_TRIAL, message: 'the machine rebooted before the trial was confirmed' } };
  }
  return {
    step: 'rollback',
    bootId,
    outcome: { verdict: VERDICT.UNREACHABLE, reason: REASON.CONFIRM_FAILED, message: `the trial agent refused the confirmation: ${output}`, output },
  };
}

/**
 * The trial was confirmed: the recorded slot table becomes the medium's, whatever runs
 * now, once its files are verified again (the machine rebooted since the upload). A
 * damaged file of the candidate that cannot be repaired ends in a rollback; one of the
 * former default's, in dropping the `old` label rather than naming a damaged file.
 */
async function promote(ctx: Ctx, recorded: SlotTable): Promise<Entry> {
  const s = await ctx.session();
  await removeCutWipe(s, ctx.plan.medium);
  let slots = recorded;
  const notes: string[] = [];
  // The first sealed build: the former default's secrets are in plaintext on the medium.
  // Its label goes before anything is checked or repaired (a repair would write them
  // again), and so do the bytes its files, and earlier ones', leave in free space.
  // Decided from the recorded table, so a promotion resumed after a crash decides the same.
  const sealing = ctx.plan.sealed === true && recorded.old !== undefined && !ctx.sealedBuild(recorded.old.buildId);
  if (sealing) {
    notes.push(`dropped old (build ${recorded.old!.buildId}): the controller cannot show that it seals its secrets, and this build does; the medium's free space was overwritten`);
    slots = { lts: slots.lts };
  }
  const damage = await findDamage(s, ctx.plan.medium, slots);
  const r = await repair(s, ctx.plan.medium, damage, ctx.copies());
  if (r.repaired.length > 0) notes.unshift(`repaired ${r.repaired.join(', ')} from the controller's copy`);
  const candidateFiles = new Set([ctx.plan.candidate.kernel, ...ctx.plan.candidate.initrds]);
  if (r.unrepairable.some((d) => candidateFiles.has(d.path))) {
    return { step: 'rollback', outcome: failed(VERDICT.MEDIUM_DAMAGED, REASON.MEDIUM_DAMAGED, new MediumDamagedError(ctx.plan.host, ctx.plan.medium, r.unrepairable)) };
  }
  if (r.unrepairable.length > 0 && slots.old) {
    notes.push(`dropped old (build ${slots.old.buildId}): ${r.unrepairable.map((d) => d.path).join(', ')} is damaged and has no copy`);
    slots = { lts: slots.lts };
  }
  await writeCfg(s, ctx.plan.medium, slots, firmwareOf(ctx));
  await removeUnreferenced(s, ctx.plan.medium, slots);
  if (sealing) await wipeFreeSpace(s, ctx.plan.medium);
  return verdict(ctx, {
    verdict: VERDICT.PROMOTED,
    reason: REASON.HEALTHY,
    message: [`build ${ctx.plan.buildId} is the default${slots.old ? `; build ${slots.old.buildId} is kept as old` : ''}`, ...repairNotes(ctx), ...notes].join('; '),
  });
}

/**
 * The secrets segment as the machine sees it: 0600 where files keep modes (deploy sets
 * it), whatever fmask gives on FAT. The image's own fstab was checked in the preflight;
 * a machine whose current mount exposes it is told, since the candidate fixes it at boot.
 */
async function checkSecretsPrivate(ctx: Ctx, s: Session): Promise<void> {
  if (!ctx.plan.secretsFile) return;
  const file = shq(`${ctx.plan.medium}/${ctx.plan.secretsFile}`);
  const out = await s.check('check the secrets segment\'s mode', `chmod 600 ${file} 2>/dev/null; stat -c %a ${file}; grep -E '[[:space:]]${ctx.plan.medium}[[:space:]]' /etc/fstab || true`);
  const [mode, line] = out.split('\n');
  if ((parseInt(mode ?? '0', 8) & 0o077) !== 0) {
    ctx.emit({
      kind: 'warn',
      source: 'deploy',
      message: `on ${ctx.plan.host} the secrets segment is mode ${mode?.trim()}: the running image mounts the medium so that others can read it (${line?.trim() || 'no fstab line'}); the candidate's fstab keeps it private from its boot on`,
    });
  }
}

/** What the upload step repaired, for the verdict's message. */
function repairNotes(ctx: Ctx): string[] {
  const repaired = lastOf(ctx.history, 'label')?.repaired;
  return repaired?.length ? [`the medium was damaged: repaired ${repaired.join(', ')} before the label was written`] : [];
}

/** The trial never began: nothing may stay armed, and `new` must not name the candidate. */
async function disarm(ctx: Ctx, outcome: Outcome): Promise<Entry> {
  const armed = !!lastOf(ctx.history, 'arm');
  if (armed || lastOf(ctx.history, 'label')) {
    const s = await ctx.session();
    if (armed) await clearOnce(s, ctx.plan.medium, firmwareOf(ctx));
    const slots = await readSlots(s, ctx.plan.medium);
    if (slots.new?.buildId === ctx.plan.buildId) await writeCfg(s, ctx.plan.medium, withoutCandidate(slots), firmwareOf(ctx));
  }
  return verdict(ctx, outcome);
}

/**
 * Brings the machine back to the default image and verifies it runs it: a reachable
 * trial is rebooted (its once-entry or its one try is used, so it boots `lts`); an unreachable one
 * is left to the agent, then to the power-cycle command. If neither brings it back the
 * deploy stays open: the next run resumes here.
 */
async function rollback(ctx: Ctx, outcome: Outcome): Promise<Entry> {
  const lts = lastOf(ctx.history, 'label')?.slots.lts;
  if (!lts) throw new RambootError(`failed to roll back deploy ${ctx.id}: the journal does not say which build was the default`, { step: 'rollback', host: ctx.plan.host });
  const { confirm_timeout, reboot_deadline } = ctx.plan.trial;
  const isLts = (r: Running) => runsEntry(r, 'lts', lts);
  let budget = confirm_timeout + reboot_deadline;
  // The boot this rollback rebooted: until it is gone, an answer is the machine going down.
  let leaving: string | undefined;
  let reboots = 0;
  let cycled = false;
  for (;;) {
    const waited = await waitUntil(ctx.target, budget, (r) => r.bootId !== leaving, waitEvents(ctx, `${ctx.plan.host} to run build ${lts.buildId} again`));
    const r = waited.running;
    if (r && isLts(r)) return { step: 'cleanup', outcome };
    if (r && r.slot === 'new' && reboots < 2) {
      reboots++;
      leaving = r.bootId;
      const s = await connect(ctx.target);
      try {
        await requestReboot(s);
      } finally {
        s.close();
      }
      budget = reboot_deadline;
      continue;
    }
    if (!waited.last.reachable && ctx.target.powerCycle && !cycled) {
      cycled = true;
      ctx.emit({ kind: 'step', step: 'rollback', deploy: ctx.id, message: `power-cycling ${ctx.plan.host}` });
      await powerCycle(ctx.target);
      leaving = undefined;
      budget = reboot_deadline;
      continue;
    }
    const seen = waited.last.reachable
      ? `it runs build ${waited.last.running.build ?? waited.last.running.cmdlineBuild ?? 'unknown'} from slot ${waited.last.running.slot ?? 'unknown'}`
      : waited.last.error;
    throw new RambootError(`failed to bring ${ctx.plan.host} back to build ${lts.buildId}: ${seen}; the deploy stays open and the next run resumes it`, {
      step: 'rollback',
      host: ctx.plan.host,
    });
  }
}

/** After a rollback: the candidate leaves the labels, then its files leave the medium. */
async function cleanup(ctx: Ctx, outcome: Outcome): Promise<Entry> {
  const s = await ctx.session();
  // A trial that was power-cycled before syslinux ran still has its once-entry.
  await clearOnce(s, ctx.plan.medium, firmwareOf(ctx));
  const slots = await readSlots(s, ctx.plan.medium);
  const kept = withoutCandidate(slots);
  if (slots.new) await writeCfg(s, ctx.plan.medium, kept, firmwareOf(ctx));
  await removeUnreferenced(s, ctx.plan.medium, kept);
  return verdict(ctx, outcome);
}

/** A journal written before UEFI has no firmware: it was BIOS. */
function firmwareOf(ctx: Ctx): Firmware {
  return ctx.plan.firmware ?? 'bios';
}

function verdict(ctx: Ctx, outcome: Outcome): Entry {
  return {
    step: 'verdict',
    outcome,
    buildId: ctx.plan.buildId,
    commit: ctx.plan.commit,
    hostKey: ctx.plan.hostKey,
    bytesSent: lastOf(ctx.history, 'label')?.bytesSent,
    imageBytes: ctx.plan.imageBytes,
  };
}

/** Whether the machine runs this slot's entry: the boot loader booted the label, and the image says it is that build. */
export function runsEntry(r: Running, slot: SlotName, e: SlotEntry): boolean {
  // An image ramboot did not build (adopted by `bootloader install`) has no /etc/ramboot-release.
  return r.slot === slot && r.cmdlineBuild === e.buildId && (r.build === undefined || r.build === e.buildId);
}

function waitEvents(ctx: Ctx, what: string): (e: WaitEvent) => void {
  return (e) => ctx.emit({ kind: 'wait', what, elapsedMs: e.elapsedMs, observation: e.observation });
}
