import type { Plan } from './compare.js';
import { bytes, delta, headline, sections, sideText, uploadText, type Item, type Part } from './describe.js';
import { COMMENT_LIMIT, escapeText, renderMarkdown } from './markdown.js';

// A plan for people (text, for a terminal or a CI log), for a pull request comment
// (Markdown, markdown.ts) and for programs (JSON: the Plan itself).

export const FORMATS = ['text', 'markdown', 'json'] as const;
export type PlanFormat = (typeof FORMATS)[number];

export function renderPlan(plan: Plan, format: PlanFormat): string {
  if (format === 'json') return `${JSON.stringify(plan, null, 2)}\n`;
  if (format === 'markdown') return renderMarkdown(plan);
  return renderText(plan);
}

const plain = (parts: Part[]) => parts.map((p) => (typeof p === 'string' ? p : p.code)).join('');
const SIGN: Record<Item['verb'], string> = { added: '+', removed: '-', changed: '~', upgraded: '↑', downgraded: '↓' };

function itemText(i: Item): string {
  const line = `  ${SIGN[i.verb]} ${plain(i.parts)}`;
  return i.diff ? `${line}\n${i.diff.split('\n').map((l) => `      ${l}`).join('\n')}` : line;
}

export function renderText(p: Plan): string {
  const out = [`ramboot plan for ${p.host}: ${headline(p)}`, `  ${sideText(p.base)} → ${sideText(p.head)}`, ''];
  for (const s of sections(p)) out.push(`${s.title}: ${s.summary}`, ...s.items.map(itemText), '');
  out.push(
    'Size',
    `  image   ${delta(p.size.image.before, p.size.image.after)}`,
    `  RAM     ${delta(p.size.ram.before, p.size.ram.after)}`,
    `  upload  ${bytes(p.size.uploadBytes)} to a medium holding the base: ${p.size.upload.map(uploadText).join('; ')}`,
  );
  if (p.notes.length) out.push('', 'Notes', ...p.notes.map((n) => `  ${n}`));
  return `${out.join('\n')}\n`;
}

/** One machine's plan in a repository of several; no plan when the base does not describe the machine (it is new). */
export interface MachinePlan {
  machine?: string;
  host: string;
  plan?: Plan;
}

/** The hidden line of the one plan comment of a repository of several machines. */
export const PLANS_MARKER = '<!-- ramboot-plan machines -->';

const machineLine = (m: MachinePlan, what: string) => `machine ${m.machine} (${m.host}): ${what}`;

/** Every machine's plan: those that change in full, the others one line each. */
export function renderPlans(plans: MachinePlan[], format: PlanFormat): string {
  if (format === 'json') return `${JSON.stringify({ machines: Object.fromEntries(plans.map((m) => [m.machine, m.plan ?? null])) }, null, 2)}\n`;
  if (format === 'markdown') return renderPlansMarkdown(plans);
  return plans
    .map((m) => (!m.plan ? `${machineLine(m, 'new: the base does not describe it, so everything is added')}\n` : m.plan.changes === 0 ? `${machineLine(m, 'no change')}\n` : `== machine ${m.machine}\n${renderText(m.plan)}`))
    .join('\n');
}

/**
 * One pull request comment for every machine: a line per machine, then a section per
 * machine that changes (its own plan comment, sharing the comment's size limit).
 */
export function renderPlansMarkdown(plans: MachinePlan[]): string {
  const changed = plans.filter((m) => !m.plan || m.plan.changes > 0);
  const list = plans.map((m) => {
    const line = escapeText(machineLine(m, !m.plan ? 'new machine' : m.plan.changes === 0 ? 'no change' : headline(m.plan)));
    return m.plan?.changes === 0 ? `- ${line}` : `- **${line}**`;
  });
  const head = [PLANS_MARKER, `### ramboot plan: ${changed.length} of ${plans.length} machines change`, '', ...list].join('\n');
  const share = Math.floor((COMMENT_LIMIT - Buffer.byteLength(head) - 64 * plans.length) / Math.max(1, changed.length));
  const sections = changed.filter((m) => m.plan).map((m) => `---\n\n#### machine ${escapeText(m.machine ?? '')}\n\n${renderMarkdown(m.plan!, share).split('\n').slice(1).join('\n')}`);
  return `${[head, ...sections].join('\n\n')}\n`;
}
