// A unified diff of two small texts (three lines of context, as `diff -u`), for the
// files a plan shows. The common head and tail are cut first, so the table of the
// longest common subsequence covers only the lines that differ.

const CONTEXT = 3;
/** Cells of the LCS table beyond which two texts are too different to diff here. */
const MAX_CELLS = 4_000_000;

type Op = { kind: ' ' | '-' | '+'; line: string };

export interface UnifiedDiff {
  text: string;
  added: number;
  removed: number;
}

/** The diff of `before` and `after` (undefined when one side does not exist), or undefined when it would be too costly. */
export function unifiedDiff(path: string, before: string | undefined, after: string | undefined): UnifiedDiff | undefined {
  const a = lines(before);
  const b = lines(after);
  const ops = diffLines(a, b);
  if (!ops) return undefined;
  const header = [`--- ${before === undefined ? '/dev/null' : `a/${path}`}`, `+++ ${after === undefined ? '/dev/null' : `b/${path}`}`];
  const body = hunks(ops);
  return {
    text: [...header, ...body].join('\n'),
    added: ops.filter((o) => o.kind === '+').length,
    removed: ops.filter((o) => o.kind === '-').length,
  };
}

/** Lines without their newline; a missing final newline is marked as diff marks it. */
function lines(text: string | undefined): string[] {
  if (text === undefined || text === '') return [];
  const out = text.split('\n');
  if (out[out.length - 1] === '') out.pop();
  else out[out.length - 1] += '\n\\ No newline at end of file';
  return out;
}

function diffLines(a: string[], b: string[]): Op[] | undefined {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const middle = lcsOps(a.slice(start, endA), b.slice(start, endB));
  if (!middle) return undefined;
  const same = (l: string): Op => ({ kind: ' ', line: l });
  return [...a.slice(0, start).map(same), ...middle, ...a.slice(endA).map(same)];
}

/** The edit script through the longest common subsequence (dynamic programming). */
function lcsOps(a: string[], b: string[]): Op[] | undefined {
  const n = a.length;
  const m = b.length;
  if ((n + 1) * (m + 1) > MAX_CELLS) return undefined;
  const w = m + 1;
  const t = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      t[i * w + j] = a[i] === b[j] ? t[(i + 1) * w + j + 1]! + 1 : Math.max(t[(i + 1) * w + j]!, t[i * w + j + 1]!);
    }
  }
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ kind: ' ', line: a[i++]! });
      j++;
    } else if (j < m && (i === n || t[i * w + j + 1]! >= t[(i + 1) * w + j]!)) {
      ops.push({ kind: '+', line: b[j++]! });
    } else {
      ops.push({ kind: '-', line: a[i++]! });
    }
  }
  // Removals before additions within a change, as diff -u prints them.
  return reorder(ops);
}

function reorder(ops: Op[]): Op[] {
  const out: Op[] = [];
  let k = 0;
  while (k < ops.length) {
    if (ops[k]!.kind === ' ') {
      out.push(ops[k++]!);
      continue;
    }
    const run: Op[] = [];
    while (k < ops.length && ops[k]!.kind !== ' ') run.push(ops[k++]!);
    out.push(...run.filter((o) => o.kind === '-'), ...run.filter((o) => o.kind === '+'));
  }
  return out;
}

/** Groups the edit script into hunks with their "@@ -a,b +c,d @@" headers. */
function hunks(ops: Op[]): string[] {
  const changed = ops.map((o, i) => (o.kind === ' ' ? -1 : i)).filter((i) => i >= 0);
  const out: string[] = [];
  let k = 0;
  while (k < changed.length) {
    const from = Math.max(0, changed[k]! - CONTEXT);
    let to = changed[k]!;
    while (k < changed.length && changed[k]! - to <= 2 * CONTEXT) to = changed[k++]!;
    const end = Math.min(ops.length, to + CONTEXT + 1);
    const before = ops.slice(0, from);
    const hunk = ops.slice(from, end);
    const aStart = before.filter((o) => o.kind !== '+').length;
    const bStart = before.filter((o) => o.kind !== '-').length;
    const aLen = hunk.filter((o) => o.kind !== '+').length;
    const bLen = hunk.filter((o) => o.kind !== '-').length;
    out.push(`@@ -${range(aStart, aLen)} +${range(bStart, bLen)} @@`, ...hunk.map((o) => `${o.kind}${o.line}`));
  }
  return out;
}

/** diff's line range: "start,len", start 1-based; an empty range names the line before it. */
function range(start: number, len: number): string {
  if (len === 0) return `${start},0`;
  return len === 1 ? `${start + 1}` : `${start + 1},${len}`;
}
