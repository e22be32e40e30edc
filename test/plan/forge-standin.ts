import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

// A stand-in for the comment endpoints of the GitHub and Gitea/Forgejo APIs: it keeps
// comments in memory, answers in their shapes (GitHub pages its list and links the next
// page; Gitea returns all of it under /api/v1), checks the token the way each forge
// takes it, and records every request for the tests to look at.

export interface StandinComment {
  id: number;
  body: string;
  html_url: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  authorization?: string;
  body?: { body?: string };
}

export interface ForgeStandin {
  url: string;
  /** The API address ramboot is given. */
  apiUrl: string;
  requests: RecordedRequest[];
  comments: StandinComment[];
  /** Answers every request with this status instead (a refused token, an outage). */
  failWith?: number;
  close(): Promise<void>;
}

const PAGE = 30;

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString();
}

export async function forgeStandin(kind: 'github' | 'gitea', token: string, repository: string, pr: number): Promise<ForgeStandin> {
  const prefix = kind === 'github' ? '' : '/api/v1';
  const auth = kind === 'github' ? `Bearer ${token}` : `token ${token}`;
  let nextId = 1000;
  const state: Omit<ForgeStandin, 'url' | 'apiUrl' | 'close'> = { requests: [], comments: [] };
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://standin');
    const text = await readBody(req);
    const body = text ? (JSON.parse(text) as { body?: string }) : undefined;
    state.requests.push({ method: req.method ?? '', path: url.pathname + url.search, authorization: req.headers.authorization, ...(body ? { body } : {}) });
    const send = (status: number, value: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(value));
    };
    if (state.failWith) return send(state.failWith, { message: 'Resource not accessible by integration' });
    if (req.headers.authorization !== auth) return send(401, { message: 'Bad credentials' });
    const list = `${prefix}/repos/${repository}/issues/${pr}/comments`;
    const one = new RegExp(`^${prefix}/repos/${repository}/issues/comments/(\\d+)$`).exec(url.pathname);
    if (url.pathname === list && req.method === 'GET') {
      if (kind === 'gitea') return send(200, state.comments);
      const perPage = Number(url.searchParams.get('per_page') ?? PAGE);
      const page = Number(url.searchParams.get('page') ?? 1);
      const slice = state.comments.slice((page - 1) * perPage, page * perPage);
      const more = page * perPage < state.comments.length;
      const next = `<http://${req.headers.host}${list}?per_page=${perPage}&page=${page + 1}>; rel="next"`;
      return send(200, slice, more ? { link: next } : {});
    }
    if (url.pathname === list && req.method === 'POST') {
      const c = { id: nextId++, body: body?.body ?? '', html_url: `http://standin/${repository}/pull/${pr}#comment-${nextId}` };
      state.comments.push(c);
      return send(201, c);
    }
    if (one && req.method === 'PATCH') {
      const c = state.comments.find((x) => x.id === Number(one[1]));
      if (!c) return send(404, { message: 'Not Found' });
      c.body = body?.body ?? '';
      return send(200, c);
    }
    send(404, { message: 'Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const standin = Object.assign(state, {
    url,
    apiUrl: `${url}${prefix}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
  return standin;
}
