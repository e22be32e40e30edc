import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Journal } from '../../deploy/journal.js';
import { readRunning, type Running } from '../../deploy/running.js';
import { connect, type Target } from '../../deploy/ssh.js';
import { targetFor, type LocalSettings } from '../../deploy/target.js';
import { readManifest } from '../../image/manifest.js';
import { describe } from '../../lib/errors.js';
import type { ControllerStatus } from '../controller.js';
import type { MachineState } from '../state.js';

// The machine's own facts for the page (uptime, memory, the boot medium's use, the build
// and slot it booted), read over SSH with the running build's pinned host key: one
// connection, two cheap commands. The page asks for them; a probe starts at most every
// PROBE_EVERY_MS, runs in the background (the page never waits for SSH), and never while
// a deploy owns the machine (it reboots it; the deploy's own events say what runs then).

const PROBE_EVERY_MS = 60_000;
/** The phases in which a deploy owns the machine (it may be rebooting it). */
const DEPLOY_PHASES: ReadonlySet<string> = new Set(['preflight', 'upload', 'reboot', 'health', 'promote', 'rollback']);
const PROBE_TIMEOUT_MS = 10_000;
const SEP = '--ramboot--';

export interface Usage {
  sizeB: number;
  usedB: number;
  /** The mount point df found the path on. */
  mountedOn: string;
}

export interface MachineFacts {
  at: string;
  ok: boolean;
  error?: string;
  uptimeS?: number;
  memory?: { totalB: number; availableB: number };
  /** The root file system, which lives in RAM. */
  root?: Usage;
  medium?: Usage & { path: string };
  /** How it booted, and on UEFI the boot entries on the medium with their counters. */
  boot?: { firmware: 'bios' | 'uefi'; entries: string[] };
  running?: Running;
}

export interface Reach {
  target: Target;
  medium: string;
}

export interface ProbeOptions {
  /** How to reach the machine now, or why it cannot be (nothing promoted yet). */
  reach: () => Promise<Reach | string>;
  /** Whether a deploy owns the machine now. */
  busy: () => boolean;
  /** The build the controller last promoted: facts read before it are stale. */
  promoted: () => string | undefined;
  everyMs?: number;
}

export function isDeploying(phase: string | undefined): boolean {
  return phase !== undefined && DEPLOY_PHASES.has(phase);
}

export class MachineProbe {
  private facts?: MachineFacts;
  /** The promoted build when the facts were asked for. */
  private factsFor?: string;
  private inFlight?: Promise<void>;
  private lastStart = 0;

  constructor(private readonly o: ProbeOptions) {}

  /**
   * The facts last read, unless a promotion came after them (they would name the build
   * before it, beside a history that says the new one runs); starts a probe in the
   * background when they are due or stale. Never waits for it.
   */
  get(): MachineFacts | undefined {
    const promoted = this.o.promoted();
    const stale = this.facts !== undefined && this.factsFor !== promoted;
    const due = stale || Date.now() - this.lastStart >= (this.o.everyMs ?? PROBE_EVERY_MS);
    if (due && !this.inFlight && !this.o.busy()) {
      this.lastStart = Date.now();
      this.inFlight = this.probe(promoted).finally(() => (this.inFlight = undefined));
    }
    return stale ? undefined : this.facts;
  }

  /** Whether a probe runs now (the page says "asking the machine…"). */
  get probing(): boolean {
    return !!this.inFlight;
  }

  /** Resolves when the probe in flight, if any, is done. */
  async settled(): Promise<void> {
    await this.inFlight;
  }

  private async probe(promoted: string | undefined): Promise<void> {
    const at = new Date().toISOString();
    try {
      const reach = await this.o.reach();
      this.facts = typeof reach === 'string' ? { at, ok: false, error: reach } : { at, ok: true, ...(await probeMachine(reach.target, reach.medium)) };
    } catch (err) {
      this.facts = { at, ok: false, error: describe(err), running: this.factsFor === promoted ? this.facts?.running : undefined };
    }
    this.factsFor = promoted;
  }
}

/** Asks the machine, over one SSH connection, what it runs and how full it is. */
async function probeMachine(target: Target, medium: string): Promise<Omit<MachineFacts, 'at' | 'ok'>> {
  const session = await connect(target, PROBE_TIMEOUT_MS);
  try {
    const running = await readRunning(session);
    const m = `'${medium.replace(/'/g, `'\\''`)}'`;
    const out = await session.check(
      'read uptime, memory, disk use and how it booted',
      `cat /proc/uptime; echo ${SEP}; cat /proc/meminfo; echo ${SEP}; df -Pk / ${m} 2>/dev/null; echo ${SEP}; test -d /sys/firmware/efi && echo uefi || echo bios; ls ${m}/loader/entries 2>/dev/null; true`,
      { timeoutMs: PROBE_TIMEOUT_MS },
    );
    return { running, ...parseProbe(out, medium) };
  } finally {
    session.close();
  }
}

/** The probe's output: /proc/uptime, /proc/meminfo, `df -Pk / MEDIUM` (busybox and GNU agree on -P), then the firmware and the entries. */
export function parseProbe(out: string, medium: string): Pick<MachineFacts, 'uptimeS' | 'memory' | 'root' | 'medium' | 'boot'> {
  const [uptime = '', meminfo = '', df = '', boot = ''] = out.split(`${SEP}\n`);
  const [firmware, ...entries] = boot.trim().split('\n');
  const kib = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(meminfo);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kib('MemTotal');
  const available = kib('MemAvailable') ?? kib('MemFree');
  const rows = df
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 6 && /^\d+$/.test(f[1]!))
    .map((f): Usage => ({ sizeB: Number(f[1]) * 1024, usedB: Number(f[2]) * 1024, mountedOn: f.slice(5).join(' ') }));
  const uptimeS = Number(uptime.split(/\s+/)[0]);
  return {
    uptimeS: Number.isFinite(uptimeS) && uptime.trim() ? uptimeS : undefined,
    memory: total !== undefined && available !== undefined ? { totalB: total, availableB: available } : undefined,
    root: rows[0],
    // df prints one row per operand, the medium's second.
    medium: rows[1] && { ...rows[1], path: medium },
    boot: firmware === 'uefi' || firmware === 'bios' ? { firmware, entries: firmware === 'uefi' ? entries.filter((e) => e.endsWith('.conf')).sort() : [] } : undefined,
  };
}

/**
 * How to reach the machine for a probe: the running build's settings and pinned host
 * key, with what is local to the controller (the virtual NAS's port, its SSH key).
 */
export async function machineReach(state: MachineState, reach: () => LocalSettings, running: ControllerStatus['running']): Promise<Reach | string> {
  if (!running?.buildId) return 'no build has been promoted on the machine yet';
  const imageDir = join(state.images, running.buildId);
  if (!existsSync(imageDir)) return `the running build ${running.buildId} is no longer among the controller's images`;
  const manifest = await readManifest(imageDir);
  const hostKey = (await Journal.open(state.dir)).lastPromotedHostKey() ?? manifest.hostKey;
  if (!hostKey) return `build ${running.buildId} has no host key to pin`;
  return { target: { ...targetFor(manifest.settings, reach()), hostKey }, medium: manifest.settings.boot.medium };
}
