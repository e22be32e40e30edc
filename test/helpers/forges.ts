import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

// Stand-ins for the services notifications go to: local HTTP servers that record every
// request and answer the way GitHub's, Gitea's and GitLab's commit status APIs and an
// ntfy server do (the status codes, the checks that matter to a client: the token, the
// 140-character description, GitLab's refused transitions). Named stand-ins, not the
// services: what they check is what ramboot's requests must satisfy.

export interface Received {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  json: Record<string, unknown>;
}

export interface StandIn {
  name: string;
  url: string;
  received: Received[];
  /** The next `times` requests are answered with this status (a forge having a bad minute). */
  failNext(times: number, status?: number): void;
  /** Every answer waits this long first (a slow server). */
  slow(ms: number): void;
  close(): Promise<void>;
}

type Handler = (r: Received, res: ServerResponse) => void;

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function standIn(name: string, handle: Handler): Promise<StandIn> {
  const received: Received[] = [];
  let failures: { left: number; status: number } = { left: 0, status: 500 };
  let delayMs = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(body) as Record<string, unknown>;
      } catch {
        json = {};
      }
      const r: Received = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, json };
      received.push(r);
      const fail = failures.left > 0;
      if (fail) failures.left--;
      setTimeout(() => (fail ? reply(res, failures.status, { message: `${name} stand-in: failing on purpose` }) : handle(r, res)), delayMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    name,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    failNext(times, status = 500) {
      failures = { left: times, status };
    },
    slow(ms) {
      delayMs = ms;
    },
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** The fields GitHub and Gitea share; GitHub refuses a description over 140 characters with 422. */
function statusCheck(r: Received, res: ServerResponse, states: string[], nameKey: 'context' | 'name'): boolean {
  const { state, description } = r.json as { state?: string; description?: string };
  if (!state || !states.includes(state)) {
    reply(res, 422, { message: 'Validation Failed', errors: [{ field: 'state', code: 'custom', message: 'state is not included in the list' }] });
    return false;
  }
  if (typeof description === 'string' && [...description].length > 140) {
    reply(res, 422, { message: 'Validation Failed', errors: [{ field: 'description', code: 'custom', message: 'description is too long (maximum is 140 characters)' }] });
    return false;
  }
  if (typeof r.json[nameKey] !== 'string') {
    reply(res, 422, { message: `${nameKey} is missing` });
    return false;
  }
  return true;
}

/** GitHub: POST /repos/:owner/:repo/statuses/:sha with `Authorization: Bearer TOKEN`. */
export function githubStandIn(token: () => string): Promise<StandIn> {
  return standIn('GitHub stand-in', (r, res) => {
    const m = /^\/repos\/[^/]+\/[^/]+\/statuses\/([0-9a-f]{40})$/.exec(r.path);
    if (r.method !== 'POST' || !m) return reply(res, 404, { message: 'Not Found' });
    if (r.headers.authorization !== `Bearer ${token()}`) return reply(res, 401, { message: 'Bad credentials' });
    if (!r.headers['user-agent']) return reply(res, 403, { message: 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header' });
    if (!statusCheck(r, res, ['error', 'failure', 'pending', 'success'], 'context')) return;
    reply(res, 201, { id: r.path.length, sha: m[1], ...r.json });
  });
}

/** Gitea and Forgejo: POST /api/v1/repos/:owner/:repo/statuses/:sha with `Authorization: token TOKEN`. */
export function giteaStandIn(token: () => string): Promise<StandIn> {
  return standIn('Gitea stand-in', (r, res) => {
    const m = /^\/api\/v1\/repos\/[^/]+\/[^/]+\/statuses\/([0-9a-f]{40})$/.exec(r.path);
    if (r.method !== 'POST' || !m) return reply(res, 404, { message: 'Not Found' });
    if (r.headers.authorization !== `token ${token()}`) return reply(res, 401, { message: 'token is required' });
    if (!statusCheck(r, res, ['pending', 'success', 'error', 'failure', 'warning'], 'context')) return;
    reply(res, 201, { id: r.path.length, ...r.json });
  });
}

/**
 * GitLab: POST /api/v4/projects/:id/statuses/:sha with `PRIVATE-TOKEN`; a status keeps
 * its state per commit and name, and asking for the state it has (running → running,
 * pending → pending) is refused with 400, as GitLab's state machine does.
 */
export function gitlabStandIn(token: () => string): Promise<StandIn> {
  const states = new Map<string, string>();
  return standIn('GitLab stand-in', (r, res) => {
    const m = /^\/api\/v4\/projects\/([^/]+)\/statuses\/([0-9a-f]{40})$/.exec(r.path);
    if (r.method !== 'POST' || !m) return reply(res, 404, { message: '404 Not Found' });
    if (r.headers['private-token'] !== token()) return reply(res, 401, { message: '401 Unauthorized' });
    if (!statusCheck(r, res, ['pending', 'running', 'success', 'failed', 'canceled'], 'name')) return;
    const key = `${m[2]} ${String(r.json.name)}`;
    const state = String(r.json.state);
    const before = states.get(key);
    if ((before === 'running' || before === 'pending') && before === state) {
      return reply(res, 400, { message: `Cannot transition status via :${state === 'running' ? 'run' : 'enqueue'} from :${before} (Reason(s): Status cannot transition via "${state === 'running' ? 'run' : 'enqueue'}")` });
    }
    states.set(key, state);
    reply(res, 201, { id: r.path.length, status: state, name: r.json.name, description: r.json.description, target_url: r.json.target_url });
  });
}

/** ntfy: JSON published to the root URL (topic in the body); with a token, `Authorization: Bearer`. */
export function ntfyStandIn(token?: () => string): Promise<StandIn> {
  return standIn('ntfy stand-in', (r, res) => {
    if (r.method !== 'POST' || r.path !== '/') return reply(res, 404, { code: 40401, http: 404, error: 'page not found' });
    if (token && r.headers.authorization !== `Bearer ${token()}`) return reply(res, 401, { code: 40101, http: 401, error: 'unauthorized' });
    if (typeof r.json.topic !== 'string') return reply(res, 400, { code: 40009, http: 400, error: 'invalid request: topic invalid' });
    reply(res, 200, { id: `m${r.path.length}`, time: Math.floor(Date.now() / 1000), event: 'message', ...r.json });
  });
}

/** A receiver of the generic webhook: records and answers 200. */
export function webhookReceiver(): Promise<StandIn> {
  return standIn('webhook receiver', (_r, res) => reply(res, 200, { ok: true }));
}
