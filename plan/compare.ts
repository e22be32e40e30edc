import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gitSource, machineSource, parseSourceConfig, type Source } from '../builder/source.js';
import { parsePackages } from '../builder/packages.js';
import { CONFIG_FILE } from '../lib/config.js';
import { readSegmentFiles } from '../image/cpio-read.js';
import { deltaBytes, makeDelta } from '../deploy/delta.js';
import { LITERAL_SUFFIX, PART_SUFFIX, contentPath } from '../deploy/slots.js';
import { readManifest, type Manifest, type SegmentName } from '../image/manifest.js';
import { ACCOUNT_FILES, compareAccounts, type AccountChange, type AccountTexts } from './accounts.js';
import { unifiedDiff } from './diff.js';
import { asText, compareFiles, diffObstacle, type FileChange } from './files.js';
import { comparePackages, listedNames, PACKAGE_DB, parsePackageDb, type Package, type PackageChanges } from './packages.js';
import { compareSecrets, readCommitSecrets, type CommitSecrets, type SecretsSection } from './secrets.js';
import { compareKernel, compareSettings, type ValueChange } from './settings.js';
import { sizeReport, type SizeReport } from './size.js';

// What a change does to the machine, from two built images: the one running (or the
// pull request's base) and the candidate. Most of it comes from the manifests; the few
// file contents a plan needs (account files, small text files of the overlay, a package
// database setup.sh changed) are read from the base and overlay segments, never from
// the secrets segment. The commits' `packages` lists and secrets come from the
// repository; nothing is decrypted.

export const PLAN_FORMAT = 1;

export interface PlanSide {
  buildId: string;
  commit?: string;
  distro: string;
}

export interface ServiceChange {
  runlevel: string;
  added: string[];
  removed: string[];
}

export interface Plan {
  formatVersion: typeof PLAN_FORMAT;
  host: string;
  base: PlanSide;
  head: PlanSide;
  /** How many changes to the machine the sections list; 0 means none (exit 0). */
  changes: number;
  packages: PackageChanges;
  files: FileChange[];
  services: ServiceChange[];
  accounts: AccountChange[];
  kernel: ValueChange[];
  settings: ValueChange[];
  /** Absent when the commits could not be read (no repository given). */
  secrets?: SecretsSection;
  size: SizeReport;
  /** What the plan could not look at, and why. */
  notes: string[];
}

export interface PlanOptions {
  /** The repository the images were built from: their commits' `packages` files and secrets are read there. */
  repoDir?: string;
}

/** Account files and package databases can be large; small text files are limited by DIFF_MAX_BYTES already. */
const READ_MAX_BYTES = 64 * 1024 * 1024;
/** Diff text a plan carries in all; more files are listed without theirs (the controller keeps every plan in its history). */
const DIFF_BUDGET = 256 * 1024;

interface Side {
  dir: string;
  manifest: Manifest;
  source?: Source;
}

export async function planImages(baseImageDir: string, headImageDir: string, opts: PlanOptions = {}): Promise<Plan> {
  const notes: string[] = [];
  const [a, b] = await Promise.all([side(baseImageDir, opts, notes), side(headImageDir, opts, notes)]);
  const files = compareFiles(a.manifest, b.manifest);
  const accounts = differs(a.manifest, b.manifest, ACCOUNT_FILES);
  const db = PACKAGE_DB[b.manifest.distro.name];
  const wanted = (s: Side) => [...(accounts ? ACCOUNT_FILES : []), ...(db && inOverlay(s.manifest, db) ? [db] : []), ...diffPaths(files, s === a ? 'before' : 'after')];
  const [ca, cb] = await Promise.all([readContents(a, wanted(a)), readContents(b, wanted(b))]);
  addDiffs(files, ca, cb);
  const [sa, sb] = await Promise.all([commitSecrets(a), commitSecrets(b)]);
  if (!sa || !sb) notes.push('secrets and listed packages not compared: the commits were not read (no repository given, or an image was built from a directory)');
  const plan: Omit<Plan, 'changes'> = {
    formatVersion: PLAN_FORMAT,
    host: b.manifest.host,
    base: planSide(a.manifest),
    head: planSide(b.manifest),
    packages: comparePackages(packagesOf(a, ca), packagesOf(b, cb), await listed(a), await listed(b)),
    files,
    services: compareServices(a.manifest.services, b.manifest.services),
    accounts: accounts ? compareAccounts(texts(ca), texts(cb)) : [],
    kernel: compareKernel(a.manifest, b.manifest),
    settings: compareSettings(a.manifest, b.manifest),
    ...(sa && sb ? { secrets: compareSecrets(sa, sb) } : {}),
    size: sizeReport(a.manifest, b.manifest, sb?.files.size ?? 0, (name) => segmentDelta(a, b, name)),
    notes,
  };
  return { ...plan, changes: countChanges(plan) };
}

/** What a deploy sends for segment `name` of the head as a delta against the base's, as deploy/medium.ts computes it. */
function segmentDelta(a: Side, b: Side, name: SegmentName): number | undefined {
  const [x, y] = [a.manifest.segments.find((s) => s.name === name), b.manifest.segments.find((s) => s.name === name)];
  if (!x || !y || name === 'secrets') return undefined;
  const out = contentPath(y.sha256, 'cpio.zst');
  const d = makeDelta(readFileSync(join(a.dir, x.file)), readFileSync(join(b.dir, y.file)));
  return deltaBytes(d, { basis: contentPath(x.sha256, 'cpio.zst'), literal: `${out}${LITERAL_SUFFIX}`, out: `${out}${PART_SUFFIX}` });
}

async function side(dir: string, opts: PlanOptions, notes: string[]): Promise<Side> {
  const manifest = await readManifest(dir);
  if (!opts.repoDir || !manifest.commit) return { dir, manifest };
  try {
    const source = await gitSource(opts.repoDir, manifest.commit);
    // An image of one machine of several is compared with the files that machine sees.
    return { dir, manifest, source: manifest.machine ? await machineSource(source, manifest.machine) : source };
  } catch (err) {
    notes.push(`commit ${manifest.commit.slice(0, 12)} not read: ${(err as Error).message}`);
    return { dir, manifest };
  }
}

function planSide(m: Manifest): PlanSide {
  return { buildId: m.buildId, ...(m.commit ? { commit: m.commit } : {}), distro: `${m.distro.name} ${m.distro.release}`.trim() };
}

const digestOf = (m: Manifest, path: string) => {
  const f = m.files.find((x) => x.path === path);
  return f ? `${f.sha256 ?? ''}:${f.size}` : undefined;
};

function differs(a: Manifest, b: Manifest, paths: readonly string[]): boolean {
  return paths.some((p) => digestOf(a, p) !== digestOf(b, p));
}

function inOverlay(m: Manifest, path: string): boolean {
  return m.files.find((f) => f.path === path)?.segment === 'overlay';
}

function diffPaths(files: FileChange[], which: 'before' | 'after'): string[] {
  return files.filter((c) => c[which] && !diffObstacle(c)).map((c) => c.path);
}

/** Reads the wanted files from the segments that hold them (base or overlay; never secrets). */
async function readContents(s: Side, paths: string[]): Promise<Map<string, Buffer>> {
  const bySegment = new Map<SegmentName, string[]>();
  const where = new Map(s.manifest.files.map((f) => [f.path, f.segment]));
  for (const p of new Set(paths)) {
    const segment = where.get(p);
    if (segment === 'base' || segment === 'overlay') bySegment.set(segment, [...(bySegment.get(segment) ?? []), p]);
  }
  const out = new Map<string, Buffer>();
  for (const [segment, want] of bySegment) {
    const file = s.manifest.segments.find((x) => x.name === segment)!.file;
    for (const [p, data] of await readSegmentFiles(join(s.dir, file), want, READ_MAX_BYTES)) out.set(p, data);
  }
  return out;
}

function addDiffs(files: FileChange[], before: Map<string, Buffer>, after: Map<string, Buffer>): void {
  let budget = DIFF_BUDGET;
  for (const c of files) {
    const obstacle = diffObstacle(c);
    if (obstacle) {
      if (!obstacle.quiet) c.noDiff = obstacle.why;
      continue;
    }
    const [x, y] = [c.before && before.get(c.path), c.after && after.get(c.path)];
    const [tx, ty] = [x && asText(x), y && asText(y)];
    if ((c.before && tx === undefined) || (c.after && ty === undefined)) {
      c.noDiff = (c.before && !x) || (c.after && !y) ? 'not readable from the image' : 'binary';
      continue;
    }
    const d = unifiedDiff(c.path, tx, ty);
    if (!d) c.noDiff = 'too different to diff';
    else if (d.text.length > budget) c.noDiff = 'the plan holds no more diffs';
    else {
      c.diff = d.text;
      budget -= d.text.length;
    }
  }
}

function texts(contents: Map<string, Buffer>): AccountTexts {
  const out: AccountTexts = {};
  for (const p of ACCOUNT_FILES) {
    const data = contents.get(p);
    if (data) out[p] = data.toString('utf8');
  }
  return out;
}

/** The image's package database: read from the overlay when setup.sh changed it, else the manifest's copy of the stage's. */
function packagesOf(s: Side, contents: Map<string, Buffer>): Package[] {
  const db = PACKAGE_DB[s.manifest.distro.name];
  const data = db ? contents.get(db) : undefined;
  return data ? parsePackageDb(s.manifest.distro.name, data.toString('utf8')) : s.manifest.packages;
}

async function listed(s: Side): Promise<Set<string>> {
  const text = (await s.source?.readFile('packages'))?.toString() ?? '';
  return listedNames(parsePackages(text, 'packages'));
}

async function commitSecrets(s: Side): Promise<CommitSecrets | undefined> {
  if (!s.source) return undefined;
  const file = `${s.source.label}:${CONFIG_FILE}`;
  return readCommitSecrets(s.source, await parseSourceConfig(s.source), file);
}

function compareServices(a: Record<string, string[]>, b: Record<string, string[]>): ServiceChange[] {
  const out: ServiceChange[] = [];
  for (const runlevel of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    const [x, y] = [a[runlevel] ?? [], b[runlevel] ?? []];
    const added = y.filter((s) => !x.includes(s));
    const removed = x.filter((s) => !y.includes(s));
    if (added.length || removed.length) out.push({ runlevel, added, removed });
  }
  return out;
}

/** One per package, file, service, account, kernel or setting change, secret and recipient. */
export function countChanges(p: Omit<Plan, 'changes'>): number {
  return (
    p.packages.added.length +
    p.packages.removed.length +
    p.packages.upgraded.length +
    p.files.length +
    p.services.reduce((n, s) => n + s.added.length + s.removed.length, 0) +
    p.accounts.length +
    p.kernel.length +
    p.settings.length +
    (p.secrets ? p.secrets.changes.length + p.secrets.recipients.added.length + p.secrets.recipients.removed.length : 0)
  );
}
