import { PLAN_FORMAT, type Plan } from '../../plan/compare.js';

/** A plan with no change; tests fill in the sections they need. */
export function emptyPlan(over: Partial<Plan> = {}): Plan {
  return {
    formatVersion: PLAN_FORMAT,
    host: 'nas',
    base: { buildId: 'aaaaaaaa-11111111', commit: 'a'.repeat(40), distro: 'alpine v3.20' },
    head: { buildId: 'bbbbbbbb-22222222', commit: 'b'.repeat(40), distro: 'alpine v3.20' },
    changes: 0,
    packages: { added: [], removed: [], upgraded: [] },
    files: [],
    services: [],
    accounts: [],
    kernel: [],
    settings: [],
    secrets: { changes: [], recipients: { added: [], removed: [] } },
    size: { image: { before: 1000, after: 1000 }, ram: { before: 4096, after: 4096 }, upload: [{ file: 'overlay', bytes: 10, sent: true }], uploadBytes: 10 },
    notes: [],
    ...over,
  };
}

export interface MarkdownStructure {
  /** Problems found: unbalanced <details>, an unclosed code fence, a <summary> outside <details>. */
  problems: string[];
  details: number;
  summaries: string[];
}

/**
 * Checks the block structure of a Markdown comment as GitHub reads it: code fences
 * (``` or longer, possibly indented) open and close in pairs, and outside them
 * <details> and </details> nest and balance, each <details> followed by its <summary>.
 */
export function markdownStructure(md: string): MarkdownStructure {
  const problems: string[] = [];
  const summaries: string[] = [];
  let fence: string | undefined;
  let depth = 0;
  let details = 0;
  md.split('\n').forEach((line, i) => {
    const f = /^\s*(`{3,})/.exec(line);
    if (fence) {
      if (f && f[1]!.length >= fence.length && line.trim() === f[1]) fence = undefined;
      return;
    }
    if (f) {
      fence = f[1];
      return;
    }
    // Code spans are not markup: drop them before looking for tags.
    const outside = line.replace(/(`+)(?:(?!\1).)*?\1/g, '');
    for (const tag of outside.matchAll(/<(\/?)(details|summary)\b[^>]*>/g)) {
      if (tag[2] === 'details') {
        if (tag[1]) depth--;
        else {
          depth++;
          details++;
        }
        if (depth < 0) problems.push(`line ${i + 1}: </details> without <details>`);
      } else if (!tag[1]) {
        if (depth === 0) problems.push(`line ${i + 1}: <summary> outside <details>`);
        summaries.push(/<summary>(.*?)<\/summary>/.exec(outside)?.[1] ?? '');
      }
    }
  });
  if (fence) problems.push('a code fence is never closed');
  if (depth !== 0) problems.push(`${depth} <details> never closed`);
  return { problems, details, summaries };
}
