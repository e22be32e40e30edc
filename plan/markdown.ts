import type { Plan } from './compare.js';
import { delta, headline, sections, sideText, uploadSummary, uploadText, type Item, type Part, type Section } from './describe.js';

// A plan as a pull request comment: a hidden marker (the comment poster finds the
// machine's one comment by it), a summary (counts and size deltas), then one
// collapsible <details> per kind of change. GitHub refuses comments over 65,536
// characters; measured here in UTF-8 bytes (never fewer than characters), a plan that
// would be longer loses items from its largest sections first, and says so.

export const COMMENT_LIMIT = 65_536;

/** Diffs are cut inside a comment, so that one file's diff cannot crowd out the other items. */
const DIFF_MAX_LINES = 120;
const DIFF_MAX_BYTES = 8 * 1024;

/** The hidden line that names the machine a plan comment is for. */
export function planMarker(host: string): string {
  return `<!-- ramboot-plan host="${host}" -->`;
}

const len = (s: string) => Buffer.byteLength(s);

/** Escapes what Markdown or HTML would read as markup in plain words. */
export function escapeText(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/[\\`*_[\]#|~]/g, '\\$&').replace(/\r?\n/g, ' ');
}

/** A code span that holds any text: a fence longer than its longest run of backticks, one line. */
export function codeSpan(s: string): string {
  const text = s.replace(/\r?\n/g, ' ⏎ ') || ' ';
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(longest + 1);
  const pad = longest > 0 || text.startsWith('`') || text.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${text}${pad}${fence}`;
}

function fenced(body: string, info: string, indent: string): string {
  const longest = Math.max(2, ...(body.match(/`{3,}/g) ?? []).map((r) => r.length));
  const fence = '`'.repeat(longest + 1);
  return [`${fence}${info}`, ...body.split('\n'), fence].map((l) => `${indent}${l}`).join('\n');
}

function partsMd(parts: Part[]): string {
  return parts.map((p) => (typeof p === 'string' ? escapeText(p) : codeSpan(p.code))).join('');
}

function shortDiff(diff: string): string {
  const lines = diff.split('\n');
  let kept = 0;
  let size = 0;
  while (kept < lines.length && kept < DIFF_MAX_LINES && size + len(lines[kept]!) + 1 <= DIFF_MAX_BYTES) size += len(lines[kept++]!) + 1;
  if (kept === lines.length) return diff;
  return `${lines.slice(0, kept).join('\n')}\n… ${lines.length - kept} more lines of this diff cut`;
}

function itemMd(i: Item): string {
  const line = `- **${i.verb}** ${partsMd(i.parts)}`;
  return i.diff ? `${line}\n\n${fenced(shortDiff(i.diff), 'diff', '  ')}\n` : line;
}

/** One kind of change as Markdown blocks, with prefix sums of their sizes to cut at any count. */
interface Laid {
  section: Section;
  blocks: string[];
  /** prefix[k]: bytes of the first k blocks joined by newlines. */
  prefix: number[];
}

function lay(section: Section): Laid {
  const blocks = section.items.map(itemMd);
  const prefix = [0];
  for (const b of blocks) prefix.push(prefix[prefix.length - 1]! + len(b) + (prefix.length > 1 ? 1 : 0));
  return { section, blocks, prefix };
}

const open = (s: Section) => `<details><summary>${s.title}: ${s.summary}</summary>\n\n`;
const CLOSE = '\n\n</details>';

function cutNote(l: Laid, keep: number): string {
  const cut = l.blocks.length - keep;
  if (cut === 0) return '';
  return `${keep > 0 ? '\n\n' : ''}_… ${cut.toLocaleString('en')} more not shown: the comment is limited to ${COMMENT_LIMIT.toLocaleString('en')} characters; \`ramboot plan\` prints them all._`;
}

function sectionMd(l: Laid, keep: number): string {
  return `${open(l.section)}${l.blocks.slice(0, keep).join('\n')}${cutNote(l, keep)}${CLOSE}`;
}

function sectionLength(l: Laid, keep: number): number {
  return len(open(l.section)) + l.prefix[keep]! + len(cutNote(l, keep)) + len(CLOSE);
}

function head(p: Plan, laid: Laid[], keep: number[]): string {
  const rows = [
    ...laid.map((l) => `| ${l.section.title} | ${l.section.summary} |`),
    `| image | ${delta(p.size.image.before, p.size.image.after)} |`,
    `| RAM (unpacked files) | ${delta(p.size.ram.before, p.size.ram.after)} |`,
    `| a deploy uploads | ${escapeText(uploadSummary(p))} |`,
  ];
  const cut = laid.map((l, i) => ({ l, n: l.blocks.length - keep[i]! })).filter((x) => x.n > 0);
  const cutLine = cut.length
    ? `\n\n> Cut to fit a comment (${COMMENT_LIMIT.toLocaleString('en')} characters): ${cut.map((x) => `${x.l.section.title.toLowerCase()} (${x.n.toLocaleString('en')} of ${x.l.blocks.length.toLocaleString('en')} not shown)`).join(', ')}. Run \`ramboot plan ${p.base.commit?.slice(0, 12) ?? 'BASE'} ${p.head.commit?.slice(0, 12) ?? 'HEAD'}\` for the whole plan.`
    : '';
  return [
    planMarker(p.host),
    `### ramboot plan for ${codeSpan(p.host)}: ${headline(p)}`,
    '',
    `${codeSpan(sideText(p.base))} → ${codeSpan(sideText(p.head))} (${escapeText(p.head.distro)})`,
    '',
    '| | |',
    '|---|---|',
    ...rows,
  ].join('\n') + cutLine;
}

function tail(p: Plan): string {
  const rows = p.size.upload.map((r) => `- ${escapeText(uploadText(r))}`);
  const size = `<details><summary>Size and upload</summary>\n\n- image: ${delta(p.size.image.before, p.size.image.after)}\n- RAM: ${delta(p.size.ram.before, p.size.ram.after)}\n\nTo a medium holding the base, a deploy sends:\n\n${rows.join('\n')}${CLOSE}`;
  const notes = p.notes.length ? `\n\n${p.notes.map((n) => `> ${escapeText(n)}`).join('\n>\n')}` : '';
  return `${size}${notes}\n`;
}

function assemble(p: Plan, laid: Laid[], keep: number[]): string {
  return [head(p, laid, keep), ...laid.map((l, i) => sectionMd(l, keep[i]!)), tail(p)].join('\n\n');
}

/** The length of assemble()'s result: head, sections and tail joined by blank lines. */
function total(p: Plan, laid: Laid[], keep: number[]): number {
  const fixed = len(head(p, laid, keep)) + len(tail(p)) + 2 * (laid.length + 1);
  return fixed + laid.reduce((n, l, i) => n + sectionLength(l, keep[i]!), 0);
}

/** The largest k below `upTo` for which `ok(k)` holds (ok is monotone: true up to some k), or -1. */
function largest(upTo: number, ok: (k: number) => boolean): number {
  let lo = -1;
  let hi = upTo - 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi + 1) / 2);
    if (ok(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * How many items of each section fit: the largest section is cut first, down to the
 * size of the next largest or until the whole fits, and so on.
 */
function fit(p: Plan, laid: Laid[], limit: number): number[] {
  const keep = laid.map((l) => l.blocks.length);
  while (total(p, laid, keep) > limit) {
    const sizes = laid.map((l, i) => (keep[i]! > 0 ? sectionLength(l, keep[i]!) : -1));
    const i = sizes.indexOf(Math.max(...sizes));
    if (sizes[i]! < 0) break;
    const next = Math.max(0, ...sizes.filter((_, j) => j !== i));
    const l = laid[i]!;
    const trial = (k: number) => total(p, laid, keep.map((x, j) => (j === i ? k : x)));
    const fits = largest(keep[i]!, (k) => trial(k) <= limit);
    if (fits >= 0 && sectionLength(l, fits) >= next) keep[i] = fits;
    else keep[i] = Math.max(0, Math.min(keep[i]! - 1, largest(keep[i]!, (k) => sectionLength(l, k) <= next)));
  }
  return keep;
}

export function renderMarkdown(p: Plan, limit = COMMENT_LIMIT): string {
  const laid = sections(p).map(lay);
  return assemble(p, laid, fit(p, laid, limit));
}
