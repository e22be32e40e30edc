import type { Plan } from './compare.js';
import type { FileChange, FileState } from './files.js';
import type { ValueChange } from './settings.js';
import type { UploadRow } from './size.js';

// A plan as sentences, one list of items per kind of change: the text and Markdown
// renderers format the same items (Markdown sets names and values in code spans), so
// both say the same things in the same words.

/** A piece of an item's sentence: plain words, or a name or value shown as code. */
export type Part = string | { code: string };

export interface Item {
  verb: 'added' | 'removed' | 'changed' | 'upgraded' | 'downgraded';
  parts: Part[];
  diff?: string;
}

export type SectionKey = 'packages' | 'files' | 'services' | 'accounts' | 'kernel' | 'settings' | 'secrets';

export interface Section {
  key: SectionKey;
  title: string;
  /** "1 added, 2 upgraded". */
  summary: string;
  items: Item[];
}

/** In the order a reviewer reads them: what runs first, the files (the longest list) last. */
const TITLES: Record<SectionKey, string> = {
  packages: 'Packages',
  services: 'Services',
  accounts: 'Users and groups',
  kernel: 'Kernel and command line',
  settings: 'ramboot.yaml (deploy settings)',
  secrets: 'Secrets',
  files: 'Files',
};

export function bytes(n: number): string {
  const abs = Math.abs(n);
  if (abs < 1024) return `${n} B`;
  if (abs < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (abs < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function delta(before: number, after: number): string {
  const d = after - before;
  if (d === 0) return `${bytes(before)} (unchanged)`;
  return `${bytes(before)} → ${bytes(after)} (${d > 0 ? '+' : '−'}${bytes(Math.abs(d))})`;
}

const mode = (m: number) => m.toString(8).padStart(4, '0');
const owner = (s: FileState) => (s.uid !== undefined ? `${s.uid}:${s.gid}` : undefined);

function stateText(s: FileState): string {
  const what = s.type === 'file' ? `file, ${bytes(s.size)}` : s.type === 'symlink' ? `symlink to ${s.target}` : s.type;
  return [what, `mode ${mode(s.mode)}`, ...(owner(s) ? [`owner ${owner(s)}`] : [])].join(', ');
}

function fileItem(c: FileChange): Item {
  const note = c.noDiff && c.change !== 'removed' ? [` (no diff: ${c.noDiff})`] : [];
  const diff = c.diff ? { diff: c.diff } : {};
  if (c.change === 'added') return { verb: 'added', parts: [{ code: c.path }, ` ${stateText(c.after!)}`, ...note], ...diff };
  if (c.change === 'removed') return { verb: 'removed', parts: [{ code: c.path }, ` ${stateText(c.before!)}`], ...diff };
  const [a, b] = [c.before!, c.after!];
  const what = c.what.map((w) => {
    if (w === 'content') return `content ${bytes(a.size)} → ${bytes(b.size)}`;
    if (w === 'mode') return `mode ${mode(a.mode)} → ${mode(b.mode)}`;
    if (w === 'owner') return `owner ${owner(a)} → ${owner(b)}`;
    if (w === 'target') return `target ${a.target} → ${b.target}`;
    return `${a.type} → ${b.type}`;
  });
  return { verb: 'changed', parts: [{ code: c.path }, ` ${what.join(', ')}`, ...note], ...diff };
}

function valueItem(v: ValueChange): Item {
  if (v.before === undefined) return { verb: 'added', parts: [{ code: v.key }, ': ', { code: v.after ?? '' }] };
  if (v.after === undefined) return { verb: 'removed', parts: [{ code: v.key }, ' (was ', { code: v.before }, ')'] };
  return { verb: 'changed', parts: [{ code: v.key }, ': ', { code: v.before }, ' → ', { code: v.after }] };
}

const VERBS: Item['verb'][] = ['added', 'removed', 'upgraded', 'downgraded', 'changed'];

function counts(items: Item[]): string {
  return VERBS.map((verb) => [verb, items.filter((i) => i.verb === verb).length] as const)
    .filter(([, k]) => k > 0)
    .map(([verb, k]) => `${k} ${verb}`)
    .join(', ');
}

function packageItems(p: Plan): Item[] {
  const listed = (l: boolean) => (l ? ' (listed)' : ' (dependency)');
  return [
    ...p.packages.added.map((x): Item => ({ verb: 'added', parts: [{ code: x.name }, ` ${x.version}${listed(x.listed)}`] })),
    ...p.packages.removed.map((x): Item => ({ verb: 'removed', parts: [{ code: x.name }, ` ${x.version}${listed(x.listed)}`] })),
    ...p.packages.upgraded.map((x): Item => ({ verb: x.downgrade ? 'downgraded' : 'upgraded', parts: [{ code: x.name }, ` ${x.from} → ${x.to}${listed(x.listed)}`] })),
  ];
}

function serviceItems(p: Plan): Item[] {
  return p.services.flatMap((s) => [
    ...s.added.map((name): Item => ({ verb: 'added', parts: [{ code: name }, ' to runlevel ', { code: s.runlevel }] })),
    ...s.removed.map((name): Item => ({ verb: 'removed', parts: [{ code: name }, ' from runlevel ', { code: s.runlevel }] })),
  ]);
}

function accountItems(p: Plan): Item[] {
  return p.accounts.map((a): Item => ({ verb: a.change, parts: [`${a.kind} `, { code: a.name }, ...(a.details.length ? [`: ${a.details.join(', ')}`] : [])] }));
}

function secretItems(p: Plan): Item[] {
  if (!p.secrets) return [];
  return [
    ...p.secrets.changes.map((s): Item => ({ verb: s.change, parts: [{ code: s.name }, ...(s.details.length ? [`: ${s.details.join('; ')}`] : [])] })),
    ...p.secrets.recipients.added.map((r): Item => ({ verb: 'added', parts: ['recipient ', { code: r }, ' (secrets.recipients)'] })),
    ...p.secrets.recipients.removed.map((r): Item => ({ verb: 'removed', parts: ['recipient ', { code: r }, ' (secrets.recipients): rotate what it could read'] })),
  ];
}

/** The kinds of change the plan has, in the order a reviewer reads them; empty kinds are left out. */
export function sections(p: Plan): Section[] {
  const items: Record<SectionKey, Item[]> = {
    packages: packageItems(p),
    services: serviceItems(p),
    accounts: accountItems(p),
    kernel: p.kernel.map(valueItem),
    settings: p.settings.map(valueItem),
    secrets: secretItems(p),
    files: p.files.map(fileItem),
  };
  return (Object.keys(TITLES) as SectionKey[])
    .filter((k) => items[k].length > 0)
    .map((key) => ({ key, title: TITLES[key], summary: counts(items[key]), items: items[key] }));
}

export function headline(p: Plan): string {
  return p.changes === 0 ? 'no change to the machine' : `${p.changes} change${p.changes === 1 ? '' : 's'} to the machine`;
}

export function sideText(s: Plan['base']): string {
  return s.commit ? s.commit.slice(0, 12) : `build ${s.buildId}`;
}

export function uploadText(r: UploadRow): string {
  if (!r.sent) return `${r.file}: not sent (${r.note ?? 'already on the medium'})`;
  return `${r.file}: ${r.bytes !== undefined ? bytes(r.bytes) : 'size known only to the controller'}${r.note ? ` (${r.note})` : ''}`;
}

/** "3.7 KiB (overlay)", what a deploy uploads in all. */
export function uploadSummary(p: Plan): string {
  const sent = p.size.upload.filter((r) => r.sent);
  if (sent.length === 0) return 'nothing (the medium has every file)';
  const unknown = sent.some((r) => r.bytes === undefined) ? ' + the secrets segment' : '';
  return `${bytes(p.size.uploadBytes)}${unknown} (${sent.map((r) => r.file).join(', ')})`;
}
