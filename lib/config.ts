import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from './errors.js';
import { configSchema, type Config } from './config-schema.js';

export const CONFIG_FILE = 'ramboot.yaml';
/** Where a repository of several machines keeps each one's own files: machines/NAME/. */
export const MACHINES_DIR = 'machines';

/**
 * Parses and validates ramboot.yaml. The first problem found is thrown as a
 * ConfigError naming the file, the line and the key, and what is allowed there.
 */
export function parseConfig(text: string, file = CONFIG_FILE): Config {
  return parseConfigLayers([{ text, file }]);
}

/** Keys only the repository's own ramboot.yaml sets: they are the controller's, not a machine's. */
export const REPOSITORY_KEYS = ['watch', 'rollout'] as const;

/** One ramboot.yaml of a stack: the repository's, then a machine's over it. */
export interface ConfigLayer {
  text: string;
  file: string;
}

/**
 * Parses ramboot.yaml files laid over one another (a machine's over the repository's):
 * maps merge key by key, a list or a value in a later file replaces the earlier one. The
 * merged settings are validated once; a problem is reported in the last file that sets
 * the key at fault, else in the first.
 */
export function parseConfigLayers(layers: ConfigLayer[]): Config {
  const parsed = layers.map((l, i) => {
    const lines = new LineCounter();
    const doc = parseDocument(l.text, { lineCounter: lines, prettyErrors: false });
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      // linePos is only filled in with prettyErrors: take the line from the offset.
      const line = e.linePos?.[0]?.line ?? (e.pos ? lines.linePos(e.pos[0]).line : undefined);
      throw new ConfigError(l.file, line, undefined, `not valid YAML: ${e.message.split('\n')[0]}`);
    }
    const shared = i > 0 ? REPOSITORY_KEYS.find((k) => doc.has(k)) : undefined;
    if (shared) {
      throw new ConfigError(l.file, lineOf(doc, lines, [shared]), shared, `is set for the whole repository: move it to the top-level ${CONFIG_FILE} (one controller follows one branch for every machine)`);
    }
    return { ...l, doc, lines };
  });
  const merged = parsed.reduce<unknown>((acc, p) => mergeSettings(acc, p.doc.toJS() ?? {}), {});
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = issue.code === 'unrecognized_keys' ? [...issue.path.map(String), issue.keys[0]!] : issue.path.map(String);
    const at = [...parsed].reverse().find((p) => p.doc.hasIn(path)) ?? parsed[0]!;
    throw issueToError(issue, at.doc, at.lines, at.file);
  }
  return result.data;
}

/** The repository's own settings (watch, rollout), the same for every machine. */
export type RepositorySettings = Pick<Config, 'watch' | 'rollout'>;

const repositorySchema = configSchema.pick({ watch: true, rollout: true });

/**
 * The settings a repository of several machines has once for all (REPOSITORY_KEYS), from
 * its top-level ramboot.yaml alone: a machine's broken file does not hide them, and the
 * keys a machine sets (host, say) are not asked for. Errors name the file, line and key.
 */
export function parseRepositorySettings(text: string, file = CONFIG_FILE): RepositorySettings {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) throw new ConfigError(file, undefined, undefined, `not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  const all = (doc.toJS() ?? {}) as Record<string, unknown>;
  const result = repositorySchema.safeParse(Object.fromEntries(REPOSITORY_KEYS.filter((k) => k in all).map((k) => [k, all[k]])));
  if (!result.success) throw issueToError(result.error.issues[0]!, doc, lines, file);
  return result.data;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function mergeSettings(base: unknown, over: unknown): unknown {
  if (!isMap(base) || !isMap(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base ? mergeSettings(base[k], v) : v;
  return out;
}

function issueToError(issue: z.core.$ZodIssue, doc: Document, lines: LineCounter, file: string): ConfigError {
  let path = issue.path.map(String);
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    path = [...path, issue.keys[0]!];
    message = `unknown key; allowed here: ${allowedKeys(issue.path.map(String)).join(', ')}`;
  } else if (issue.code === 'invalid_value' && 'values' in issue) {
    message = `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  } else if (issue.code === 'invalid_type' && issue.input === undefined) {
    message = `is required (${issue.expected})`;
  }
  const line = lineOf(doc, lines, path);
  return new ConfigError(file, line, path.join('.') || undefined, message);
}

/** The line of the key itself when the parent map has it, else of the deepest node that exists along the path. */
function lineOf(doc: Document, lines: LineCounter, path: string[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    if (n > 0) {
      // Point at the key (an unknown key's value may start on a later line).
      const parent = doc.getIn(path.slice(0, n - 1), true) as { items?: { key: unknown }[] } | undefined;
      const pair = parent?.items?.find((p) => isNode(p.key) && String((p.key as { value?: unknown }).value) === path[n - 1]);
      if (pair && isNode(pair.key) && pair.key.range) return lines.linePos(pair.key.range[0]).line;
    }
    const node = doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return lines.linePos(node.range[0]).line;
  }
  return undefined;
}

function allowedKeys(path: string[]): string[] {
  let schema: unknown = configSchema;
  for (const key of path) schema = unwrap(schema)?.shape?.[key];
  return Object.keys(unwrap(schema)?.shape ?? {});
}

function unwrap(schema: unknown): { shape?: Record<string, unknown> } | undefined {
  let s = schema as { shape?: Record<string, unknown>; def?: { innerType?: unknown; in?: unknown; schema?: unknown } } | undefined;
  while (s && !s.shape && s.def) s = (s.def.innerType ?? s.def.in ?? s.def.schema) as typeof s;
  return s;
}
