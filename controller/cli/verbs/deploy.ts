import { resolve } from 'node:path';
import { build } from '../../../builder/build.js';
import { bootloaderInstall } from '../../../deploy/bootloader.js';
import { deploy, recordBuildFailure, type DeployResult } from '../../../deploy/deploy.js';
import { Journal, acquireLock } from '../../../deploy/journal.js';
import type { Target } from '../../../deploy/ssh.js';
import { localCopies, scrub, type ScrubReport } from '../../../deploy/integrity.js';
import { readSlots } from '../../../deploy/medium.js';
import { connect } from '../../../deploy/ssh.js';
import { formatStatus, status } from '../../../deploy/status.js';
import { targetFor } from '../../../deploy/target.js';
import { VERDICT_EXIT_CODE, VERDICT_TEXT } from '../../../deploy/verdict.js';
import { readManifest, type Manifest } from '../../../image/manifest.js';
import { ArgumentError, EXIT, InterruptedError, RambootError, UsageError, describe } from '../../../lib/errors.js';
import { callController, findController } from '../../client.js';
import { parseRef, repositoryOf } from '../../../image/oci.js';
import { pullImage } from './publish.js';
import type { ControllerStatus } from '../../controller.js';
import { openMachine, reachFor, type Machine, type Overrides } from '../../open-machine.js';
import { modeFor, renderer, size, type RambootEvent } from '../../render.js';
import { machineState, type MachineState } from '../../state.js';

// `ramboot deploy`, `ramboot status`, `ramboot bootloader install`: the deploy library
// driven from the command line. Progress goes to stderr through the renderer; the
// result (the verdict, the status) to stdout.

export interface MachineOptions extends Overrides {
  /** The machine's repository; default: the current directory. */
  repo?: string;
  /** Must be the host the configuration describes. */
  host?: string;
  /** The machine, in a repository that describes several (machines/NAME/). */
  machine?: string;
  /** --state: the machine's state directory. */
  state?: string;
  /** The host key to pin when the journal has none (from the host key secret). */
  hostKey?: string;
  json?: boolean;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface DeployVerbOptions extends MachineOptions {
  /** An image directory; without it, the commit (default HEAD) is built first. */
  image?: string;
  /** An OCI registry reference to pull the image from (publish.ts). */
  registry?: string;
  /** --registry-login FILE: USER:TOKEN for a registry that asks for a login. */
  registryLogin?: string;
  rev?: string;
  /** The controller's age identity, to decrypt the secrets when building. */
  identity?: string;
  /** Deploy a build that was rolled back before. */
  force?: boolean;
  signal?: AbortSignal;
}

export async function deployCommand(o: DeployVerbOptions): Promise<number> {
  const out = o.stdout ?? process.stdout;
  const errStream = o.stderr ?? process.stderr;
  const r = renderer(modeFor(errStream, !!o.json), errStream);
  // The verdict is the command's result: it goes to stdout, not into the progress.
  const emit = (e: RambootEvent) => e.kind !== 'verdict' && r.emit(e);
  let state: MachineState;
  let manifest: Manifest;
  let imageDir: string;
  let journal: Journal;
  if (o.image && o.registry) throw new ArgumentError('ramboot deploy: --image and --registry name two images; give one', 'deploy');
  if (o.image || o.registry) {
    // A site controller has no repository: its state is keyed by the registry repository (any tag) it deploys from.
    const ref = o.registry ? parseRef(o.registry) : undefined;
    const site = ref ? machineState({ state: o.state, origin: repositoryOf(ref) }) : undefined;
    imageDir = ref && site ? (await pullImage(ref, site.images, { identity: o.identity, loginFile: o.registryLogin, render: r, signal: o.signal })).imageDir : resolve(o.image!);
    manifest = await readManifest(imageDir);
    checkHost(o.host, manifest.settings.host.name);
    state = site ?? machineState({ state: o.state, origin: manifest.origin, machine: manifest.machine });
    journal = await Journal.open(state.dir);
  } else {
    const machine = await openMachine({ repo: o.repo ?? '.', rev: o.rev, machine: o.machine, state: o.state });
    if (machine.notice) errStream.write(`${machine.notice}\n`);
    checkHost(o.host, machine.config.host.name);
    state = machine.state;
    journal = await Journal.open(state.dir);
    try {
      const built = await build({ repoDir: machine.repo, rev: o.rev, machine: machine.machine, imagesDir: state.images, cacheDir: state.cache, origin: machine.origin, identity: o.identity, emit, signal: o.signal });
      imageDir = built.imageDir;
      manifest = built.manifest;
    } catch (err) {
      // A fault of the build host (a mirror unreachable) or an interrupt is no verdict on the commit.
      if (!(err instanceof RambootError) || err.kind === 'retry' || err instanceof InterruptedError) throw err;
      r.end();
      const result = await recordBuildFailure(journal, describe(err));
      out.write(`${formatVerdict(result)}\n`);
      return result.exitCode;
    }
  }
  const target = targetFor(manifest.settings, reachFor(manifest.settings.host, state, o));
  const release = acquireLock(state.dir, target.name);
  try {
    const known = [o.hostKey, journal.lastPromotedHostKey()].filter((k): k is string => !!k);
    let result: DeployResult;
    try {
      result = await untilStopped(deploy({ target, journal, imageDir, manifest, previousHostKeys: known, force: o.force, images: [state.images], onEvent: emit }), o.signal);
    } catch (err) {
      r.end();
      if (err instanceof RambootError && !(err instanceof InterruptedError) && journal.open()) {
        errStream.write(`ramboot deploy: ${err.message}\n`);
        return EXIT.INCOMPLETE;
      }
      throw err;
    }
    r.end();
    out.write(`${formatVerdict(result)}\n`);
    return result.exitCode;
  } finally {
    release();
  }
}

/**
 * A deploy is cut by SIGINT or SIGTERM as a crash would cut it (the process then ends
 * at once, cli.ts): every step is journalled, so the next `ramboot deploy` resumes it,
 * and the medium's default boots the last good image meanwhile.
 */
function untilStopped<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  return Promise.race([
    work,
    new Promise<never>((_, reject) => {
      const stop = () => reject(new InterruptedError(signal.reason === 'SIGINT' ? 'SIGINT' : 'SIGTERM', 'the deploy', 'the medium boots the last good image; run ramboot deploy again to resume'));
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
    }),
  ]);
}

function checkHost(wanted: string | undefined, host: string): void {
  if (wanted !== undefined && wanted !== host) {
    throw new ArgumentError(`--host ${wanted}: this repository (or image) describes ${host}`, 'deploy');
  }
}

/** The machine of a repository's committed configuration, with the host key to pin. */
export async function machineTarget(o: MachineOptions): Promise<{ machine: Machine; journal: Journal; target: Target }> {
  const machine = await openMachine({ repo: o.repo ?? '.', machine: o.machine, state: o.state });
  if (machine.notice) (o.stderr ?? process.stderr).write(`${machine.notice}\n`);
  checkHost(o.host, machine.config.host.name);
  const journal = await Journal.open(machine.state.dir);
  const target = targetFor(machine.config, reachFor(machine.config.host, machine.state, o));
  const hostKey = o.hostKey ?? journal.lastPromotedHostKey();
  if (!hostKey) {
    throw new UsageError(`failed to connect to ${target.name}: no host key to pin (no promoted deploy in the journal yet); pass --host-key with the machine's public host key (\`ramboot secrets hostkey\`)`, {
      step: 'connect',
      host: target.name,
    });
  }
  return { machine, journal, target: { ...target, hostKey } };
}

/** The machine (over SSH) and, when one runs, its controller: desired, running, last attempt, queue, quarantine. */
export async function statusCommand(o: MachineOptions): Promise<number> {
  const { machine, journal, target } = await machineTarget(o);
  const report = await status(target, { medium: machine.config.boot.medium, journal });
  // A machine of a repository of several: its controller is the repository's (the fleet), which serves its status under /machines/NAME.
  const api = findController(machine.machine ? machineState({ state: o.state, origin: machine.origin }) : machine.state);
  const controller = api ? await callController<ControllerStatus>(api, 'GET', `${machine.machine ? `/machines/${machine.machine}` : ''}/api/status`).catch((err: unknown) => ({ error: describe(err) })) : undefined;
  const out = o.stdout ?? process.stdout;
  if (o.json) out.write(`${JSON.stringify({ ...report, controller }, null, 2)}\n`);
  else out.write(`${formatStatus(report)}\n${formatController(controller, machine.state.dir)}`);
  return report.reachable ? EXIT.OK : EXIT.FAILED;
}

function formatController(c: ControllerStatus | { error: string } | undefined, stateDir: string): string {
  if (!c) return `controller: not running (ramboot up starts it; state ${stateDir})\n`;
  if ('error' in c) return `controller: ${c.error}\n`;
  const lines = [`controller ${c.controller.version} (pid ${c.controller.pid}) following ${c.repo} ${c.branch}${c.paused ? ', PAUSED' : ''}${c.signing.required ? `, signed commits only (${c.signing.signers})` : ''}`];
  if (c.desired) lines.push(`  desired  ${c.desired.commit.slice(0, 12)} ${c.desired.subject ?? ''}`);
  if (c.running) lines.push(`  running  ${c.running.commit?.slice(0, 12) ?? '?'} build ${c.running.buildId} (promoted ${c.running.since})`);
  if (c.current) lines.push(`  now      reconciling ${c.current.commit.slice(0, 12)}: ${c.current.phase ?? 'starting'}`);
  if (c.pending) lines.push(`  queued   ${c.pending.commit.slice(0, 12)} (${c.pending.trigger.kind})`);
  if (c.retry) lines.push(`  retry    ${c.retry.commit.slice(0, 12)} at ${c.retry.at} (attempt ${c.retry.attempt}): ${c.retry.reason}`);
  if (c.lastAttempt) lines.push(`  last     ${c.lastAttempt.commit.slice(0, 12)} ${c.lastAttempt.outcome ?? c.lastAttempt.state}: ${c.lastAttempt.message ?? ''}`);
  for (const q of c.quarantine) lines.push(`  quarantined ${q.commit.slice(0, 12)} (${q.outcome}): ramboot release ${q.commit.slice(0, 12)} lifts it`);
  if (c.lastPoll) lines.push(`  polled   ${c.lastPoll.at}: ${c.lastPoll.ok ? `at ${c.lastPoll.commit?.slice(0, 12)}` : c.lastPoll.error}`);
  if (c.lastScrub) lines.push(`  scrubbed ${c.lastScrub.at}: ${c.lastScrub.error ?? (c.lastScrub.ok ? `ok${c.lastScrub.repaired.length ? `, repaired ${c.lastScrub.repaired.join(', ')}` : ''}` : `DAMAGED: ${c.lastScrub.damaged.join(', ')}`)}`);
  if (c.lastWebhook) lines.push(`  webhook  ${c.lastWebhook.at}: ${c.lastWebhook.form ?? '?'} ${c.lastWebhook.status} ${c.lastWebhook.result}`);
  return `${lines.join('\n')}\n`;
}

export async function bootloaderCommand(o: MachineOptions): Promise<number> {
  const { machine, target } = await machineTarget(o);
  const medium = machine.config.boot.medium;
  const firmware = machine.config.boot.firmware;
  const loader = firmware === 'uefi' ? 'systemd-boot' : 'extlinux';
  (o.stderr ?? process.stderr).write(`installing ${loader} on ${target.name}:${medium} (boot.firmware: ${firmware})\n`);
  const r = await bootloaderInstall(target, { medium, append: machine.config.boot.append, firmware });
  const slots = (['lts', 'old', 'new'] as const).filter((n) => r.slots[n]).map((n) => `${n}=${r.slots[n]!.buildId}`);
  (o.stdout ?? process.stdout).write(
    `${target.name} booted with ${r.firmware === 'uefi' ? 'UEFI' : 'BIOS'}; ${r.adopted.length > 0 ? `adopted ${r.adopted.join(', ')}` : 'already managed'}; ${loader} installed; ${slots.join(' ')}` +
      `${r.movedAside.length > 0 ? `; former config kept as ${r.movedAside.join(', ')}` : ''}\n`,
  );
  return EXIT.OK;
}

/** `ramboot scrub`: hashes every file syslinux.cfg names; --repair heals damage from the controller's images. */
export async function scrubCommand(o: MachineOptions & { repair?: boolean }): Promise<number> {
  const { machine, target } = await machineTarget(o);
  const medium = machine.config.boot.medium;
  const s = await connect(target);
  let report: ScrubReport;
  try {
    report = await scrub(s, medium, await readSlots(s, medium), localCopies([machine.state.images]), !!o.repair);
  } finally {
    s.close();
  }
  const out = o.stdout ?? process.stdout;
  if (o.json) out.write(`${JSON.stringify(report, null, 2)}\n`);
  else out.write(formatScrub(target.name, medium, report, !!o.repair));
  if (report.damaged.length === 0) return EXIT.OK;
  // Found, and --repair may heal it (1); or --repair could not (14, as a deploy that met it).
  return o.repair ? VERDICT_EXIT_CODE['medium-damaged'] : EXIT.FAILED;
}

export function formatScrub(host: string, medium: string, r: ScrubReport, repairing: boolean): string {
  const lines = [`scrubbed ${host}:${medium}`];
  for (const l of r.labels) {
    const bad = l.files.filter((f) => f.state !== 'ok');
    lines.push(`  ${l.label.padEnd(4)} build ${l.buildId}: ${bad.length === 0 ? `${l.files.length} files ok` : bad.map((f) => `${f.path} ${f.state.toUpperCase()}`).join(', ')}`);
  }
  if (r.damaged.length > 0) {
    lines.push(repairing ? `${r.damaged.length} damaged file(s) have no copy on this controller: rewrite the medium (ramboot format) or restore them by hand` : `${r.damaged.length} damaged file(s): ramboot scrub --repair replaces them from the controller's images`);
  }
  return `${lines.join('\n')}\n`;
}

export function formatVerdict(r: DeployResult): string {
  const o = r.outcome;
  const lines = [`${VERDICT_TEXT[o.verdict]}: ${o.message}`];
  if (r.bytesSent !== undefined && r.imageBytes) {
    lines[0] += ` (sent ${size(r.bytesSent)} of a ${size(r.imageBytes)} image, ${((100 * r.bytesSent) / r.imageBytes).toFixed(1)}%)`;
  }
  if (o.output) lines.push(...o.output.split('\n').map((l) => `  | ${l}`));
  return lines.join('\n');
}
