import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UsageError, describe } from '../../lib/errors.js';
import { RAMBOOT_VERSION } from '../../lib/package.js';
import type { Notice } from './notice.js';

// A place notifications go, as the dispatcher sees it: how a notice becomes an HTTP
// request, where its secret comes from, and what the page may show of it (never the
// secret, never a full webhook URL, which often is a secret itself).

export type TargetKind = 'github' | 'gitea' | 'forgejo' | 'gitlab' | 'webhook' | 'ntfy';

export interface HttpRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** Where a secret comes from: a file on the controller host or an environment variable. */
export interface SecretRef {
  file?: string;
  env?: string;
}

export interface Target {
  kind: TargetKind;
  /** What the page shows: the forge and repository, the server and a hint of the topic. */
  where: string;
  secret?: SecretRef;
  /** A commit status: an identical one is not posted again. */
  status: boolean;
  request(n: Notice, secret: string | undefined): HttpRequest;
  /** An answer that is not 2xx but means the status is already what was asked (GitLab's refused transitions). */
  unchanged?(status: number, body: string): boolean;
}

const USER_AGENT = `ramboot/${RAMBOOT_VERSION}`;

export function secretRef(file: string | undefined, env: string | undefined): SecretRef | undefined {
  return file || env ? { file, env } : undefined;
}

/** How the page names a secret's source: the path or the variable, never the value. */
export function secretSource(ref: SecretRef): string {
  return ref.file ? `file ${ref.file}` : `environment variable ${ref.env}`;
}

/** Reads a target's secret now (so a rotated token is used at the next send). */
export function readSecret(t: Target): string | undefined {
  const ref = t.secret;
  if (!ref) return undefined;
  if (ref.env) {
    const v = process.env[ref.env]?.trim();
    if (!v) throw new UsageError(`failed to read the ${t.kind} token: the environment variable ${ref.env} is not set for the controller (notify.${t.kind} in ramboot.yaml names it)`, { step: 'notify', input: ref.env });
    return v;
  }
  const path = ref.file!.startsWith('~/') ? join(homedir(), ref.file!.slice(2)) : ref.file!;
  let v: string;
  try {
    v = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new UsageError(`failed to read the ${t.kind} token from ${path}: ${describe(err).replace(/^[A-Z]+: /, '')} (notify.${t.kind} in ramboot.yaml names it)`, { step: 'notify', input: path });
  }
  if (!v) throw new UsageError(`failed to read the ${t.kind} token from ${path}: the file is empty`, { step: 'notify', input: path });
  return v;
}

/** The scheme and host of a URL: what the page shows of an address that may carry a secret in its path. */
export function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return 'an invalid URL';
  }
}

export function jsonHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return { 'content-type': 'application/json', 'user-agent': USER_AGENT, ...extra };
}
