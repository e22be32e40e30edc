import { parseArgs } from 'node:util';
import { ArgumentError } from '../lib/errors.js';

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

export function parseVerb<O extends Options>(v: Verb<O>, argv: string[]): { values: Values<O>; args: string[] } {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const [name, spec] of Object.entries(v.options)) {
    config[name] = { type: spec.type === 'boolean' ? 'boolean' : 'string', ...('short' in spec && spec.short ? { short: spec.short } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: config, allowPositionals: true, strict: true });
  } catch (err) {
    throw new ArgumentError(`ramboot ${v.name}: ${(err as Error).message.replace(/\. To specify a positional.*$/s, '')}\n\n${verbHelp(v)}`, v.name);
  }
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(v.options)) values[name] = convert(v, name, spec, parsed.values[name]);
  const want = v.args ?? [];
  const required = want.filter((a) => !a.optional).length;
  if (parsed.positionals.length < required || parsed.positionals.length > want.length) {
    const expected = want.length === 0 ? 'no arguments' : want.map((a) => (a.optional ? `[${a.name}]` : a.name)).join(' ');
    throw new ArgumentError(`ramboot ${v.name}: expected ${expected}, got ${parsed.positionals.length ? parsed.positionals.map((p) => `"${p}"`).join(' ') : 'none'}\n\n${verbHelp(v)}`, v.name);
  }
  return { values: values as Values<O>, args: parsed.positionals };
}

function convert(v: Verb, name: string, spec: OptionSpec, raw: string | boolean | (string | boolean)[] | undefined): unknown {
  if (spec.type === 'boolean') return raw === true;
  const value = typeof raw === 'string' ? raw : undefined;
  const bad = (what: string) => new ArgumentError(`ramboot ${v.name}: --${name} ${what}\n\n${verbHelp(v)}`, v.name);
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

function columns(rows: [string, string][], indent = '  '): string {
  const width = Math.min(34, Math.max(...rows.map(([a]) => a.length)));
  return rows.map(([a, b]) => (a.length > width ? `${indent}${a}\n${indent}${' '.repeat(width)}  ${b}` : `${indent}${a.padEnd(width)}  ${b}`)).join('\n');
}

export function verbHelp(v: Verb): string {
  const parts = [`usage: ${usageLine(v)}`, '', v.summary];
  if (v.details) parts.push('', v.details);
  if (v.args?.length) parts.push('', 'arguments:', columns(v.args.map((a) => [a.name, a.help])));
  const opts = Object.entries(v.options);
  if (opts.length) parts.push('', 'options:', columns(opts.map(([n, s]) => optionLine(n, s))));
  return `${parts.join('\n')}\n`;
}

export function overview(verbs: Verb[], footer: string): string {
  const rows: [string, string][] = verbs.map((v) => [usageLine(v).replace(/^ramboot /, '').replace(/ \[options\]$/, ''), v.summary]);
  return `usage: ramboot VERB [options]   (ramboot VERB --help lists a verb's options)\n\n${columns(rows)}\n\n${footer}`;
}
