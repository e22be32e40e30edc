import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { RambootError, UsageError } from '../lib/errors.js';
import { readManifestSync, type Manifest } from '../image/manifest.js';
import { SYNC_TIMEOUT_MS } from './medium.js';
import { PART_SUFFIX } from './slots.js';
import { SLOTS, referencedFiles, type SlotName, type SlotTable } from './slots.js';
import { shq, type Session } from './ssh.js';

// Nothing on the boot medium is trusted blindly. A cheap USB stick corrupts silently, and
// one damaged file that several labels share (the base segment) makes every label panic,
// in a loop no one can end without a person at the machine. So every file a label will
// name is hashed on the machine before the label is written; a damaged one is replaced
// from the controller's copy (files are content-addressed: one repair heals every label
// naming it). Without a copy, nothing is written and the verdict says which file.

export interface Damage {
  /** Relative to the medium: boot/ramboot/<sha256>.<kind>. */
  path: string;
  /** The labels that name it. */
  labels: SlotName[];
  expected: string;
  /** The hash found, or "missing". */
  actual: string;
}

/** The medium is damaged and the controller has no copy to repair it from: a person must replace the file or the stick. */
export class MediumDamagedError extends UsageError {
  readonly damage: Damage[];
  constructor(host: string, medium: string, damage: Damage[]) {
    const list = damage.map((d) => `${d.path} (named by ${d.labels.join(', ') || 'the candidate'}: ${d.actual === 'missing' ? 'missing' : `hashes to ${d.actual.slice(0, 12)}…`})`).join('; ');
    super(
      `the boot medium ${medium} on ${host} is damaged and this controller has no copy to repair it from: ${list}; ` +
        'nothing was written: restore the file from a machine that has the image (ramboot scrub --repair), or rewrite the medium (ramboot format)',
      { step: 'verify medium', host, input: medium },
    );
    this.damage = damage;
  }
}

/** The sha256 a content file's name promises. */
export function expectedHash(path: string): string | undefined {
  return /(?:^|\/)([0-9a-f]{64})\.[a-z.]+$/.exec(path)?.[1];
}

function namedBy(slots: SlotTable): Map<string, SlotName[]> {
  const out = new Map<string, SlotName[]>();
  for (const name of SLOTS) {
    const e = slots[name];
    if (!e) continue;
    for (const f of [e.kernel, ...e.initrds]) out.set(f, [...(out.get(f) ?? []), name]);
  }
  return out;
}

/** Hashes, in one command on the machine, every file the slots name; returns those that are not what their name says. */
export async function findDamage(session: Session, medium: string, slots: SlotTable, extra: string[] = []): Promise<Damage[]> {
  const labels = namedBy(slots);
  const files = [...new Set([...referencedFiles(slots), ...extra])].filter((f) => expectedHash(f));
  if (files.length === 0) return [];
  const r = await session.exec(`cd ${shq(medium)} && for f in ${files.map(shq).join(' ')}; do sha256sum -- "$f" 2>/dev/null || echo "missing  $f"; done`, {
    timeoutMs: SYNC_TIMEOUT_MS,
  });
  if (r.code !== 0) {
    throw new RambootError(`failed to hash the boot files on ${session.target.name}: exit ${r.code}: ${r.stderr.trim()}`, { step: 'verify medium', host: session.target.name, output: r.stderr });
  }
  const seen = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+)\s+\*?(.+)$/.exec(line.trim());
    if (m) seen.set(m[2]!, m[1]!);
  }
  const damage: Damage[] = [];
  for (const f of files) {
    const actual = seen.get(f) ?? 'missing';
    if (actual !== expectedHash(f)) damage.push({ path: f, labels: labels.get(f) ?? [], expected: expectedHash(f)!, actual });
  }
  return damage;
}

/** Where the controller keeps each boot file it built: sha256 → local file, from every image directory it has. */
export function localCopies(imagesDirs: string[], extra: { sha256: string; local: string }[] = []): Map<string, string> {
  const copies = new Map<string, string>();
  for (const f of extra) copies.set(f.sha256, f.local);
  for (const dir of imagesDirs) {
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      if (name.startsWith('.')) continue;
      let m: Manifest;
      try {
        m = readManifestSync(join(dir, name));
      } catch {
        // Not an image this ramboot reads: no copies from it.
        continue;
      }
      for (const f of [m.kernel, ...(m.ucode ? [m.ucode] : []), ...(m.segments ?? [])]) {
        const local = join(dir, name, f.file);
        if (!copies.has(f.sha256) && existsSync(local)) copies.set(f.sha256, local);
      }
    }
  }
  return copies;
}

export interface RepairResult {
  repaired: string[];
  unrepairable: Damage[];
}

/** Replaces each damaged file with the controller's copy: sent to a part file, hashed on the machine, renamed over. */
export async function repair(session: Session, medium: string, damage: Damage[], copies: Map<string, string>): Promise<RepairResult> {
  const repaired: string[] = [];
  const unrepairable: Damage[] = [];
  for (const d of damage) {
    const local = copies.get(d.expected);
    if (!local) {
      unrepairable.push(d);
      continue;
    }
    const final = `${medium}/${d.path}`;
    const part = `${final}${PART_SUFFIX}`;
    await session.upload(local, part);
    const got = await session.sha256(part);
    if (got !== d.expected) {
      await session.check('remove a corrupt repair', `rm -f ${shq(part)}`);
      unrepairable.push({ ...d, actual: got });
      continue;
    }
    await session.rename(part, final);
    repaired.push(d.path);
  }
  if (repaired.length > 0) await session.check('flush the medium', 'sync', { timeoutMs: SYNC_TIMEOUT_MS });
  return { repaired, unrepairable };
}

/** Verifies what the slots name and repairs what it can; throws MediumDamagedError for the rest. Returns the repaired files. */
export async function verifyAndRepair(session: Session, medium: string, slots: SlotTable, copies: Map<string, string>): Promise<string[]> {
  const damage = await findDamage(session, medium, slots);
  if (damage.length === 0) return [];
  const r = await repair(session, medium, damage, copies);
  if (r.unrepairable.length > 0) throw new MediumDamagedError(session.target.name, medium, r.unrepairable);
  return r.repaired;
}

export interface ScrubReport {
  labels: { label: SlotName; buildId: string; files: { path: string; state: 'ok' | 'damaged' | 'repaired' }[] }[];
  damaged: Damage[];
  repaired: string[];
}

/** `ramboot scrub`: hashes every file syslinux.cfg names; with repair, heals what the controller has copies of. */
export async function scrub(session: Session, medium: string, slots: SlotTable, copies: Map<string, string>, doRepair: boolean): Promise<ScrubReport> {
  const damage = await findDamage(session, medium, slots);
  const r = doRepair ? await repair(session, medium, damage, copies) : { repaired: [], unrepairable: damage };
  const state = (path: string) => (r.repaired.includes(path) ? 'repaired' : damage.some((d) => d.path === path) ? 'damaged' : 'ok');
  const labels = SLOTS.filter((s) => slots[s]).map((s) => ({
    label: s,
    buildId: slots[s]!.buildId,
    files: [slots[s]!.kernel, ...slots[s]!.initrds].map((path) => ({ path, state: state(path) as 'ok' | 'damaged' | 'repaired' })),
  }));
  return { labels, damaged: r.unrepairable, repaired: r.repaired };
}
