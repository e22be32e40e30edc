import { readFileSync } from 'node:fs';
import { RambootError, TransientError, UsageError } from '../lib/errors.js';
import { RAMBOOT_VERSION } from '../lib/package.js';

// The one plan comment per machine on a pull request, created on the first run and
// updated in place on every later push: it is found among the pull request's comments
// by its hidden marker (markdown.ts planMarker), so other comments, and the plan
// comments of other machines, are left alone. GitHub, Gitea and Forgejo share the
// shape of these endpoints (a pull request is an issue); they differ in how a token
// is sent and in paging.

export const FORGES = ['github', 'gitea', 'forgejo'] as const;
export type Forge = (typeof FORGES)[number];

export interface CommentTarget {
  forge: Forge;
  /** "https://api.github.com", "https://git.example.org/api/v1". */
  apiUrl: string;
  /** "owner/name". */
  repository: string;
  pr: number;
  token: string;
}

export interface TargetOptions {
  forge: Forge;
  apiUrl?: string;
  repository?: string;
  pr?: number;
}

export interface Posted {
  action: 'created' | 'updated';
  id: number;
  url?: string;
}

/** Environment variables that may hold the token, the first set wins. */
export const TOKEN_VARIABLES = ['RAMBOOT_FORGE_TOKEN', 'GITHUB_TOKEN', 'GITEA_TOKEN', 'FORGEJO_TOKEN'];

const REQUEST_TIMEOUT_MS = 30_000;
const MAX_PAGES = 100;

function missing(what: string, fix: string): UsageError {
  return new UsageError(`failed to post the plan comment: ${what}; ${fix}`, { step: 'post plan comment' });
}

/**
 * Where to post, from the options, else from what CI sets: GitHub Actions, and Gitea and
 * Forgejo Actions after it, set GITHUB_REPOSITORY, GITHUB_EVENT_PATH (the pull request
 * event), GITHUB_REF (refs/pull/N/…), GITHUB_SERVER_URL and GITHUB_API_URL.
 */
export function commentTarget(o: TargetOptions, env: Record<string, string | undefined>): CommentTarget {
  const token = TOKEN_VARIABLES.map((v) => env[v]).find((v) => v);
  if (!token) throw missing('no token', `set ${TOKEN_VARIABLES[0]} (or ${TOKEN_VARIABLES.slice(1).join(', ')}) to a token that may comment on pull requests`);
  const server = env.GITHUB_SERVER_URL?.replace(/\/+$/, '');
  const apiUrl = o.apiUrl ?? (o.forge === 'github' ? env.GITHUB_API_URL ?? 'https://api.github.com' : server ? `${server}/api/v1` : env.GITHUB_API_URL);
  if (!apiUrl) throw missing('no API address', 'pass --api-url (e.g. https://git.example.org/api/v1) or set GITHUB_SERVER_URL');
  const repository = o.repository ?? env.GITHUB_REPOSITORY;
  if (!repository || !/^[^/\s]+\/[^/\s]+$/.test(repository)) throw missing(`the repository is ${repository ? `"${repository}", not OWNER/NAME` : 'unknown'}`, 'pass --repository OWNER/NAME or set GITHUB_REPOSITORY');
  const pr = o.pr ?? prFromEvent(env.GITHUB_EVENT_PATH) ?? prFromRef(env.GITHUB_REF);
  if (!pr) throw missing('the pull request is unknown', 'pass --pr N, or run in a pull_request workflow (GITHUB_EVENT_PATH, GITHUB_REF)');
  return { forge: o.forge, apiUrl: apiUrl.replace(/\/+$/, ''), repository, pr, token };
}

function prFromEvent(path: string | undefined): number | undefined {
  if (!path) return undefined;
  try {
    const event = JSON.parse(readFileSync(path, 'utf8')) as { pull_request?: { number?: number }; number?: number };
    return event.pull_request?.number ?? event.number;
  } catch {
    return undefined;
  }
}

function prFromRef(ref: string | undefined): number | undefined {
  const m = /^refs\/pull\/(\d+)\//.exec(ref ?? '');
  return m ? Number(m[1]) : undefined;
}

interface Comment {
  id: number;
  body?: string;
  html_url?: string;
}

/** Creates the machine's plan comment, or updates the one that carries `marker`. */
export async function postComment(t: CommentTarget, marker: string, body: string): Promise<Posted> {
  const issue = `${t.apiUrl}/repos/${t.repository}/issues/${t.pr}/comments`;
  const mine = (await listComments(t, issue)).find((c) => c.body?.includes(marker));
  if (mine) {
    const c = await request<Comment>(t, 'update the plan comment', 'PATCH', `${t.apiUrl}/repos/${t.repository}/issues/comments/${mine.id}`, { body });
    return { action: 'updated', id: c.id ?? mine.id, url: c.html_url ?? mine.html_url };
  }
  const c = await request<Comment>(t, 'create the plan comment', 'POST', issue, { body });
  return { action: 'created', id: c.id, url: c.html_url };
}

/** Every comment of the pull request, following the Link header's "next" pages. */
async function listComments(t: CommentTarget, issue: string): Promise<Comment[]> {
  const out: Comment[] = [];
  let url: string | undefined = t.forge === 'github' ? `${issue}?per_page=100` : issue;
  for (let page = 0; url && page < MAX_PAGES; page++) {
    const res = await send(t, 'list the pull request\'s comments', 'GET', url);
    out.push(...((await res.json()) as Comment[]));
    url = nextPage(res.headers.get('link'));
  }
  return out;
}

function nextPage(link: string | null): string | undefined {
  return /<([^>]+)>;\s*rel="next"/.exec(link ?? '')?.[1];
}

async function request<T>(t: CommentTarget, what: string, method: string, url: string, body: unknown): Promise<T> {
  return (await (await send(t, what, method, url, body)).json()) as T;
}

async function send(t: CommentTarget, what: string, method: string, url: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {
    // GitHub takes the token as a bearer token; Gitea and Forgejo as "token".
    authorization: t.forge === 'github' ? `Bearer ${t.token}` : `token ${t.token}`,
    accept: t.forge === 'github' ? 'application/vnd.github+json' : 'application/json',
    'user-agent': `ramboot/${RAMBOOT_VERSION}`,
    ...(t.forge === 'github' ? { 'x-github-api-version': '2022-11-28' } : {}),
    ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
  };
  let res: Response;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    throw new TransientError(`failed to ${what} at ${url}: ${cause}; nothing was posted, try again`, { step: 'post plan comment', input: url }, { cause: err });
  }
  if (!res.ok) throw await httpError(what, method, url, res);
  return res;
}

const HINTS: Record<number, string> = {
  401: 'the token is missing, expired or wrong',
  403: 'the token may not comment here (GitHub: give the workflow `permissions: pull-requests: write`; a pull request from a fork gets a read-only token)',
  404: 'no such repository or pull request, or the token cannot see it (check --repository and --pr)',
};

async function httpError(what: string, method: string, url: string, res: Response): Promise<RambootError> {
  const text = await res.text().catch(() => '');
  let message = text.slice(0, 300);
  try {
    message = (JSON.parse(text) as { message?: string }).message ?? message;
  } catch {
    // Not JSON: the text itself says what went wrong.
  }
  const hint = HINTS[res.status] ? `; ${HINTS[res.status]}` : '';
  const msg = `failed to ${what}: ${method} ${url} answered HTTP ${res.status}${message ? ` (${message})` : ''}${hint}`;
  const ctx = { step: 'post plan comment', input: url };
  return res.status >= 500 || res.status === 429 ? new TransientError(msg, ctx) : new UsageError(msg, ctx);
}
