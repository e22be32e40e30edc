import { parseArgs } from 'node:util';
import { ArgumentError } from '../../lib/errors.js';

// The command line, declared once: each verb lists its arguments and options with their
// help text, and this module parses (node:util parseArgs underneath), validates numbers
// and choices, and writes `ramboot --help` and `ramboot VERB --help` from the same table.

export type OptionSpec =
  | { type: 'string'; help: string; value?: string; short?: string; default?: string; choices?: readonly string[] }
  | { type: 'number'; help: string; value?: string; default?: number; min?: number; max?: number }
  | { type: 'boolean'; help: string; short?: string };

export type Options = Record<string, OptionSpec>;

type ValueOf<S extends OptionSpec> = S extends { type: 'boolean' }
  ? boolean
  : S extends { type: 'number' }
    ? S extends { default: number } ? number : number | undefined
    : S extends { choices: readonly (infer C)[] }
      ? S extends { default: string } ? C : C | undefined
      : S extends { default: string } ? string : string | undefined;

export type Values<O extends Options> = { [K in keyof O]: ValueOf<O[K]> };

export interface ArgSpec {
  name: string;
  help: string;
  optional?: boolean;
}

export interface Verb<O extends Options = Options> {
  /** "deploy", or "secrets add" for a verb of a group. */
  name: string;
  summary: string;
  /** More lines for `ramboot VERB --help`. */
  details?: string;
  args?: ArgSpec[];
  options: O;
  run(values: Values<O>, args: string[]): Promise<number>;
}

/** Keeps the options' literal types, so `run` sees typed values. */
export function verb<const O extends Options>(v: Verb<O>): Verb<O> {
  return v;
}

/** `width`: the columns of the help text that follows an error. */
export function parseVerb<O extends Options>(v: Verb<O>, argv: string[], width = HELP_WIDTH): { values: Values<O>; args: string[] } {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const [name, spec] of Object.entries(v.options)) {
    config[name] = { type: spec.type === 'boolean' ? 'boolean' : 'string', ...('short' in spec && spec.short ? { short: spec.short } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: config, allowPositionals: true, strict: true });
  } catch (err) {
    throw new ArgumentError(`ramboot ${v.name}: ${parseProblem(v, err as Error)}\n\n${verbHelp(v, width)}`, v.name);
  }
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(v.options)) values[name] = convert(v, name, spec, parsed.values[name], width);
  const want = v.args ?? [];
  const required = want.filter((a) => !a.optional).length;
  if (parsed.positionals.length < required || parsed.positionals.length > want.length) {
    const expected = want.length === 0 ? 'no arguments' : want.map((a) => (a.optional ? `[${a.name}]` : a.name)).join(' ');
    throw new ArgumentError(`ramboot ${v.name}: expected ${expected}, got ${parsed.positionals.length ? parsed.positionals.map((p) => `"${p}"`).join(' ') : 'none'}\n\n${verbHelp(v, width)}`, v.name);
  }
  return { values: values as Values<O>, args: parsed.positionals };
}

function convert(v: Verb, name: string, spec: OptionSpec, raw: string | boolean | (string | boolean)[] | undefined, width: number): unknown {
  if (spec.type === 'boolean') return raw === true;
  const value = typeof raw === 'string' ? raw : undefined;
  const bad = (what: string) => new ArgumentError(`ramboot ${v.name}: --${name} ${what}\n\n${verbHelp(v, width)}`, v.name);
  if (spec.type === 'number') {
    if (value === undefined) return spec.default;
    if (!/^\d+$/.test(value)) throw bad(`must be a whole number, not "${value}"`);
    const n = Number(value);
    if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
      throw bad(`must be between ${spec.min ?? 0} and ${spec.max ?? 'any'}, not ${n}`);
    }
    return n;
  }
  if (value === undefined) return spec.default;
  if (value === '') throw bad('needs a value');
  if (spec.choices && !spec.choices.includes(value)) throw bad(`must be one of ${spec.choices.join(', ')}, not "${value}"`);
  return value;
}

function optionLine(name: string, spec: OptionSpec): [string, string] {
  const short = 'short' in spec && spec.short ? `-${spec.short}, ` : '';
  const metavar = spec.type === 'boolean' ? '' : ` ${spec.type === 'string' && spec.choices ? spec.choices.join('|') : (spec.value ?? (spec.type === 'number' ? 'N' : 'VALUE'))}`;
  const def = 'default' in spec && spec.default !== undefined ? ` (default ${spec.default})` : '';
  return [`${short}--${name}${metavar}`, `${spec.help}${def}`];
}

function usageLine(v: Verb): string {
  const args = (v.args ?? []).map((a) => (a.optional ? `[${a.name}]` : a.name)).join(' ');
  return `ramboot ${v.name}${args ? ` ${args}` : ''}${Object.keys(v.options).length ? ' [options]' : ''}`;
}

/** Rows of a two-column list: a name (an option, a verb, an exit code) and its help. */
export type Rows = [string, string][];

/** Help text goes to a terminal as wide as it is; to anything else (a pipe, a log), 80 columns. */
const HELP_WIDTH = 80;

export function helpWidth(stream: { isTTY?: boolean; columns?: number }): number {
  return stream.isTTY && stream.columns ? Math.max(40, stream.columns) : HELP_WIDTH;
}

/** Lines of at most `width` columns, broken at spaces; a word longer than a line is cut. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (let word of text.split(/\s+/).filter(Boolean)) {
    for (; word.length > width; word = word.slice(width)) {
      if (line) lines.push(line);
      line = '';
      lines.push(word.slice(0, width));
    }
    if (!line) line = word;
    else if (line.length + 1 + word.length <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  return line || lines.length === 0 ? [...lines, line] : lines;
}

/** Blank lines separate paragraphs; single line breaks are reflowed, so no source line decides the width. */
function paragraphs(text: string, width: number): string {
  return text
    .split(/\n\s*\n/)
    .map((p) => wrap(p, width).join('\n'))
    .join('\n\n');
}

function columns(rows: Rows, width: number, indent = '  '): string {
  // The name column is as wide as its widest name up to 34 (a longer name gets a line
  // of its own), and narrower on a narrow terminal so that the help keeps 30 columns.
  const left = Math.max(8, Math.min(34, width - indent.length - 32, Math.max(...rows.map(([a]) => a.length))));
  const pad = indent + ' '.repeat(left + 2);
  return rows
    .map(([a, b]) => {
      const [first = '', ...rest] = wrap(b, width - pad.length);
      const head = a.length > left ? `${indent}${a}\n${pad}${first}` : `${indent}${a.padEnd(left)}  ${first}`;
      return [head.trimEnd(), ...rest.map((l) => pad + l)].join('\n');
    })
    .join('\n');
}

export function verbHelp(v: Verb, width = HELP_WIDTH): string {
  const parts = [`usage: ${usageLine(v)}`, '', paragraphs(v.summary, width)];
  if (v.details) parts.push('', paragraphs(v.details, width));
  if (v.args?.length) parts.push('', 'arguments:', columns(v.args.map((a) => [a.name, a.help]), width));
  const opts = Object.entries(v.options);
  if (opts.length) parts.push('', 'options:', columns(opts.map(([n, s]) => optionLine(n, s)), width));
  return `${parts.join('\n')}\n`;
}

/**
 * `ramboot --help`, or a group's own usage (`ramboot secrets`): its verbs with their
 * summaries, then the exit codes when given.
 */
export function overview(verbs: Verb[], o: { group?: string; exitCodes?: Rows; width?: number } = {}): string {
  const width = o.width ?? HELP_WIDTH;
  const command = o.group ? `ramboot ${o.group} VERB` : 'ramboot VERB';
  const rows: Rows = verbs.map((v) => [usageLine(v).replace(/^ramboot /, '').replace(/ \[options\]$/, ''), v.summary]);
  const hint = `${command} --help lists a verb's options${o.group ? '' : '; ramboot --version prints the version'}.`;
  const parts = [`usage: ${command} [options]`, '', columns(rows, width), '', paragraphs(hint, width)];
  if (o.exitCodes) parts.push('', 'exit codes:', columns(o.exitCodes, width));
  return `${parts.join('\n')}\n`;
}

/** What parseArgs refused, in our words; an unknown option comes with the nearest known one. */
function parseProblem(v: Verb, err: Error): string {
  const unknown = /^Unknown option '([^']+)'/.exec(err.message)?.[1]?.replace(/=.*$/, '');
  if (!unknown) return err.message.replace(/\. To specify a positional.*$/s, '');
  const names = Object.entries(v.options).flatMap(([n, s]) => ['--' + n, ...('short' in s && s.short ? ['-' + s.short] : [])]);
  return `unknown option ${unknown}${didYouMean(unknown, names)}`;
}

/** "; did you mean X?" with the candidate the user most likely meant (a verb in quotes), or nothing when none is close. */
export function didYouMean(word: string, candidates: readonly string[], quoted = false): string {
  const c = nearest(word, candidates);
  return c === undefined ? '' : `; did you mean ${quoted ? `"${c}"` : c}?`;
}

/**
 * The only candidate the word begins (at least two letters of it), else the nearest one
 * within two edits (one for words of two or three letters, so "ab" suggests nothing).
 */
function nearest(word: string, candidates: readonly string[]): string | undefined {
  const bare = (s: string) => s.replace(/^-+/, '');
  const w = bare(word);
  const prefixed = w.length >= 2 ? candidates.filter((c) => bare(c).startsWith(w)) : [];
  if (prefixed.length === 1) return prefixed[0];
  let best: string | undefined;
  let bestDistance = Math.min(2, Math.floor(w.length / 2)) + 1;
  for (const c of candidates) {
    const d = editDistance(w, bare(c));
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best;
}

/** Damerau-Levenshtein distance (optimal string alignment): a swap of two neighbours is one edit, as in "buidl". */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}
