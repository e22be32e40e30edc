import type { Plan } from './compare.js';
import { bytes, delta, headline, sections, sideText, uploadText, type Item, type Part } from './describe.js';
import { renderMarkdown } from './markdown.js';

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
