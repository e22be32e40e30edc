import { describe } from '../lib/errors.js';
import type { Journal } from './journal.js';
import { readEntryFiles } from './esp.js';
import { mediumLayout, readSlots, type Firmware } from './medium.js';
import { readRunning, type Running } from './running.js';
import type { SlotTable } from './slots.js';
import { connect, type Session, type Target } from './ssh.js';
import { STATUS_COMMAND } from './trial.js';
import type { Outcome } from './verdict.js';

// `ramboot status`: what the machine runs, what its medium boots, how the last deploy ended.

export interface StatusReport {
  host: string;
  reachable: boolean;
  /** Why the machine could not be asked (unreachable, host key mismatch…). */
  error?: string;
  running?: Running;
  /** The trial agent's view of this boot ("trial=pending remaining=412"). */
  trial?: string;
  slots?: SlotTable;
  /** The medium's layout: syslinux.cfg (bios) or boot entries on an ESP (uefi). */
  layout?: Firmware;
  /** UEFI: the entry files, with systemd-boot's boot counters (new+0-1.conf: tried, not confirmed). */
  entries?: string[];
  lastVerdict?: { ts: string; deploy: string; buildId?: string; commit?: string; outcome: Outcome };
  /** A deploy the journal has not finished: `ramboot deploy` resumes it. */
  open?: { deploy: string; buildId?: string; step: string; ts: string };
}

export async function status(target: Target, opts: { medium: string; journal: Journal }): Promise<StatusReport> {
  const v = opts.journal.lastVerdict();
  const o = opts.journal.open();
  const report: StatusReport = {
    host: target.name,
    reachable: false,
    lastVerdict: v && { ts: v.ts, deploy: v.deploy, buildId: v.buildId, commit: v.commit, outcome: v.outcome },
    open: o && { deploy: o.id, buildId: o.plan?.buildId, step: o.last.step, ts: o.last.ts },
  };
  let session: Session | undefined;
  try {
    session = await connect(target);
    report.running = await readRunning(session);
    report.slots = await readSlots(session, opts.medium);
    report.layout = await mediumLayout(session, opts.medium);
    if (report.layout === 'uefi') report.entries = (await readEntryFiles(session, opts.medium)).map((f) => f.path.split('/').pop()!).sort();
    if (report.running.slot === 'new') {
      const t = await session.exec(STATUS_COMMAND);
      report.trial = (t.code === 0 ? t.stdout : `${STATUS_COMMAND} exited with ${t.code}: ${t.stderr}`).trim();
    }
    report.reachable = true;
  } catch (err) {
    report.error = describe(err);
  } finally {
    session?.close();
  }
  return report;
}

export function formatStatus(r: StatusReport): string {
  const lines = [`host ${r.host}`];
  if (r.running) {
    const build = r.running.build ?? `${r.running.cmdlineBuild ?? 'unknown'} (no /etc/ramboot-release)`;
    lines.push(`  running  build ${build} from slot ${r.running.slot ?? '(not booted by ramboot)'}${r.trial ? `, ${r.trial}` : ''}`);
  } else {
    lines.push(`  running  unknown: ${r.error}`);
  }
  if (r.layout) lines.push(`  boots    ${r.layout === 'uefi' ? `UEFI, systemd-boot entries: ${r.entries?.join(' ') || '(none)'}` : 'BIOS, syslinux.cfg'}`);
  for (const name of ['lts', 'old', 'new'] as const) {
    const e = r.slots?.[name];
    if (r.slots) lines.push(`  ${name.padEnd(8)} ${e ? `build ${e.buildId}` : '(empty)'}`);
  }
  if (r.lastVerdict) lines.push(`  last     ${r.lastVerdict.outcome.verdict} (${r.lastVerdict.buildId ?? r.lastVerdict.commit ?? 'no build'}, ${r.lastVerdict.ts}): ${r.lastVerdict.outcome.message}`);
  if (r.open) lines.push(`  open     deploy ${r.open.deploy} of build ${r.open.buildId} stopped at ${r.open.step} (${r.open.ts}); \`ramboot deploy\` resumes it`);
  return lines.join('\n');
}
