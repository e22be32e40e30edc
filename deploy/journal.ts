import { closeSync, existsSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, open, readFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import type { HealthCheck } from '../lib/config-schema.js';
import { RambootError, UsageError } from '../lib/errors.js';
import { PRIVATE_DIR, PRIVATE_FILE } from '../lib/private-file.js';
import type { CandidateFile, Firmware } from './medium.js';
import type { SlotEntry, SlotTable } from './slots.js';
import { VERDICT, type Outcome } from './verdict.js';

// The deploy journal: one JSON line per step, appended and fsynced BEFORE the step is
// taken. A controller killed anywhere finds the open deploy and its last step on the
// next start and re-enters that step; every step is written to be safe to repeat. Like
// every state file it is private (0600), whatever the umask.

/** Everything needed to finish a deploy without the repository or the image directory's manifest. */
export interface DeployPlan {
  host: string;
  buildId: string;
  commit?: string;
  imageDir: string;
  /** Size of all boot files of the image, to report the bytes sent against. */
  imageBytes: number;
  candidate: SlotEntry;
  files: CandidateFile[];
  hostKey: string;
  previousHostKeys: string[];
  medium: string;
  /** How the machine boots (absent in journals written before UEFI: bios). */
  firmware?: Firmware;
  health: { deadline: number; settle?: number; checks: HealthCheck[] };
  trial: { confirm_timeout: number; reboot_deadline: number };
  /** The secrets segment on the medium, which must be readable by root alone. */
  secretsFile?: string;
  /** Why the image's own fstab would mount the medium so that others read its files (it is then refused). */
  exposure?: string;
  /** The candidate keeps its secrets sealed to the machine's TPM (secrets.at_rest: tpm). */
  sealed?: boolean;
}

export type Entry =
  /** Preflight: check the machine and the medium. */
  | { step: 'start'; plan: DeployPlan }
  /** Upload the missing files under temporary names, verify, rename. */
  | { step: 'upload' }
  /** Write the labels with these slots (`new` = the candidate; on UEFI counted, which arms it); the upload sent `bytesSent`, and replaced the damaged files `repaired`. */
  | { step: 'label'; slots: SlotTable; bytesSent: number; repaired?: string[] }
  /** extlinux --once=new. */
  | { step: 'arm' }
  /** Reboot the machine, which runs boot `bootId`, and wait for another boot. */
  | { step: 'reboot'; bootId: string }
  /** Check that the new boot runs the candidate from slot `new`. */
  | { step: 'verify'; previousBootId: string }
  /** Run the health checks on trial boot `bootId`. */
  | { step: 'health'; bootId: string }
  /** Confirm the trial to the agent on boot `bootId`. */
  | { step: 'confirm'; bootId: string }
  /** Write these slots (lts = the candidate) and delete the files they do not name. */
  | { step: 'promote'; slots: SlotTable; repaired?: string[] }
  /** The trial never began: clear the once-entry (BIOS) and the `new` label. */
  | { step: 'disarm'; outcome: Outcome }
  /** Bring the machine back to `lts` (reboot, wait for the agent, power cycle) and verify it. */
  | { step: 'rollback'; outcome: Outcome; bootId?: string }
  /** Drop the candidate from the labels and its files from the medium. */
  | { step: 'cleanup'; outcome: Outcome }
  /** The deploy is over. */
  | { step: 'verdict'; outcome: Outcome; buildId?: string; commit?: string; hostKey?: string; bytesSent?: number; imageBytes?: number };

export type Step = Entry['step'];
export type JournalRecord = Entry & { ts: string; deploy: string };
export type VerdictRecord = Extract<JournalRecord, { step: 'verdict' }>;

/** The journal's name in a machine's state directory. */
export const JOURNAL_FILE = 'deploy.jsonl';

/** Steps after which the machine may be running, or about to run, the candidate. */
const BEFORE_REBOOT: Step[] = ['start', 'upload', 'label', 'arm'];

export interface DeployHistory {
  id: string;
  plan?: DeployPlan;
  entries: JournalRecord[];
  last: JournalRecord;
  verdict?: Extract<JournalRecord, { step: 'verdict' }>;
}

export class Journal {
  private constructor(
    readonly file: string,
    private records: JournalRecord[],
  ) {}

  /** The journal in a machine's state directory: `<dir>/deploy.jsonl`. A last line cut by a crash is removed. */
  static async open(dir: string): Promise<Journal> {
    await mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
    const file = join(dir, JOURNAL_FILE);
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const { records, cutAt } = parseJournal(text, file);
    if (cutAt !== undefined) await truncate(file, cutAt);
    return new Journal(file, records);
  }

  /** Appends a step and forces it to disk before returning: only then may the step be taken. */
  async record(deploy: string, entry: Entry): Promise<JournalRecord> {
    const rec = { ts: new Date().toISOString(), deploy, ...entry } as JournalRecord;
    const fh = await open(this.file, 'a', PRIVATE_FILE);
    try {
      await fh.write(`${JSON.stringify(rec)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    this.records.push(rec);
    return rec;
  }

  deploys(): DeployHistory[] {
    return groupDeploys(this.records);
  }

  /** The deploy that has no verdict yet, if the last one is such. */
  open(): DeployHistory | undefined {
    const last = this.deploys().at(-1);
    return last && !last.verdict ? last : undefined;
  }

  lastVerdict(): DeployHistory['verdict'] {
    return findLast(this.deploys(), (d) => !!d.verdict)?.verdict;
  }

  /** The host key of the build promoted last: what the machine presents until the candidate boots. */
  lastPromotedHostKey(): string | undefined {
    return findLast(this.deploys(), (d) => d.verdict?.outcome.verdict === VERDICT.PROMOTED && !!d.verdict.hostKey)?.verdict?.hostKey;
  }
}

/**
 * The verdict of the last promotion, the build the machine runs, read synchronously and
 * without opening the journal (nothing created, no cut line removed) so that a status or
 * a start may ask at any time. A line that is not a record is passed over: this is for
 * showing, and resuming a deploy is Journal.open's.
 */
export function lastPromoted(dir: string): VerdictRecord | undefined {
  const file = join(dir, JOURNAL_FILE);
  if (!existsSync(file)) return undefined;
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const r = JSON.parse(lines[i]!) as JournalRecord;
      if (r.step === 'verdict' && r.outcome?.verdict === VERDICT.PROMOTED) return r;
    } catch {
      continue;
    }
  }
  return undefined;
}

/**
 * Reads JSON lines. Only the last line may be damaged (a crash mid-append): it is left
 * out and `cutAt` gives the byte offset it starts at.
 */
export function parseJournal(text: string, file: string): { records: JournalRecord[]; cutAt?: number } {
  const records: JournalRecord[] = [];
  const lines = text.split('\n');
  let offset = 0;
  for (const [i, line] of lines.entries()) {
    const start = offset;
    offset += Buffer.byteLength(line) + 1;
    if (!line.trim()) continue;
    try {
      records.push(JSON.parse(line) as JournalRecord);
    } catch (err) {
      if (lines.slice(i + 1).every((l) => !l.trim())) return { records, cutAt: start };
      throw new RambootError(`failed to read deploy journal ${file}: line ${i + 1} is not JSON`, { step: 'read journal', input: file }, { cause: err });
    }
  }
  return { records };
}

export function groupDeploys(records: JournalRecord[]): DeployHistory[] {
  const byId = new Map<string, DeployHistory>();
  for (const r of records) {
    let d = byId.get(r.deploy);
    if (!d) {
      d = { id: r.deploy, entries: [], last: r };
      byId.set(r.deploy, d);
    }
    d.entries.push(r);
    d.last = r;
    if (r.step === 'start') d.plan = r.plan;
    if (r.step === 'verdict') d.verdict = r;
  }
  return [...byId.values()];
}

/** The last recorded entry of a step in a deploy. */
export function lastOf<S extends Step>(d: DeployHistory, step: S): Extract<JournalRecord, { step: S }> | undefined {
  return findLast(d.entries, (e) => e.step === step) as Extract<JournalRecord, { step: S }> | undefined;
}

/** Array.prototype.findLast is ES2023; the project targets ES2022. */
export function findLast<T>(items: readonly T[], pred: (item: T) => boolean): T | undefined {
  for (let i = items.length - 1; i >= 0; i--) if (pred(items[i]!)) return items[i];
  return undefined;
}

export interface Request {
  buildId: string;
  commit?: string;
  /** Deploy even a build or commit that was rolled back before. */
  force?: boolean;
}

export type StartDecision =
  /** Nothing is open: begin a new deploy. */
  | { kind: 'fresh' }
  /** Re-enter the open deploy at its last recorded step. */
  | { kind: 'resume'; deploy: DeployHistory }
  /** An open deploy of another build that never rebooted the machine: disarm it, then decide again. */
  | { kind: 'supersede'; deploy: DeployHistory }
  /** This build (or commit) was rolled back; it is not deployed again unless forced. */
  | { kind: 'refuse'; deploy: DeployHistory };

/**
 * What to do when asked to deploy `req`, given the journal. An open deploy is always
 * finished first: past the reboot the machine may be in its trial and only that deploy
 * knows how to end it.
 */
export function decideStart(history: DeployHistory[], req: Request): StartDecision {
  const last = history.at(-1);
  if (last && !last.verdict) {
    const sameBuild = last.plan?.buildId === req.buildId;
    if (!sameBuild && BEFORE_REBOOT.includes(last.last.step)) return { kind: 'supersede', deploy: last };
    return { kind: 'resume', deploy: last };
  }
  if (!req.force) {
    const rolledBack = findLast(
      history,
      (d) =>
        (d.verdict?.outcome.verdict === VERDICT.NOT_HEALTHY || d.verdict?.outcome.verdict === VERDICT.UNREACHABLE) &&
        (d.verdict.buildId === req.buildId || (req.commit !== undefined && d.verdict.commit === req.commit)),
    );
    if (rolledBack) return { kind: 'refuse', deploy: rolledBack };
  }
  return { kind: 'fresh' };
}

/**
 * One deploy at a time per host: a lock file holding the owner's pid. A lock whose
 * process is gone was left by a killed controller and is taken over.
 */
export function acquireLock(dir: string, host: string): () => void {
  const file = join(dir, 'deploy.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', PRIVATE_FILE);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => unlinkSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (pid && pid !== process.pid && alive(pid)) {
        throw new UsageError(`failed to start a deploy to ${host}: process ${pid} is deploying to it (lock ${file})`, { step: 'lock', host, input: file });
      }
      unlinkSync(file);
    }
  }
  throw new RambootError(`failed to lock ${file}: another process keeps taking it`, { step: 'lock', host, input: file });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
