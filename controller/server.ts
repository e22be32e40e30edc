import { timingSafeEqual, createHash } from 'node:crypto';
import { hostname, networkInterfaces } from 'node:os';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { UsageError } from '../lib/errors.js';
import type { Controller, Envelope } from './controller.js';
import type { Fleet } from './fleet.js';
import { judgeWebhook } from './push-webhook.js';

// The controller's HTTP server: the JSON API (status, history, logs, live events), the
// actions (reconcile, release, pause), the forge webhook. It binds to loopback unless
// told otherwise; anywhere else every request needs the token. Actions always do. It
// answers only to its own names (the Host header), against DNS rebinding. The
// handlers only read state or queue work: nothing slow runs inside a request.

/** A machine of a repository of several: its reads and its page under /machines/NAME/. */
export interface MachineRoutes {
  name: string;
  ctrl: Controller;
  routes: ((app: FastifyInstance, ctrl: Controller) => void)[];
}

export interface ServerOptions<D extends Controller | Fleet = Controller> {
  host: string;
  port: number;
  /** Required for actions, and for every request when not bound to loopback. */
  token: string;
  /** The forge's shared secret; without it the webhook endpoint says it is not configured. */
  webhookSecret?: string;
  /** Extra routes (the status page, metrics) registered by their own modules. */
  routes?: ((app: FastifyInstance, d: D) => void)[];
  /** With a fleet: each machine's reads and routes, under /machines/NAME/. */
  machines?: MachineRoutes[];
}

/** Forges send push payloads of a few hundred KiB at most; GitHub caps them at 25 MB. */
export const WEBHOOK_BODY_LIMIT = 5 * 1024 * 1024;
const HEARTBEAT_MS = 10_000;

/** Loopback names: an address of 127/8 written out whole (`127.evil.example` is a DNS name anyone can point anywhere). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** The name of a Host header without its port: `[::1]:8180` → `::1`, `nas:8180` → `nas`. */
export function hostName(header: string): string {
  const h = header.trim().toLowerCase();
  const end = h.indexOf(']');
  if (h.startsWith('[')) return end > 0 ? h.slice(1, end) : h;
  // Two colons or more: a bare IPv6 address, which has no port.
  return h.indexOf(':') === h.lastIndexOf(':') ? h.split(':')[0]! : h;
}

/**
 * Why a request's Host is refused, or undefined when it names this server: a loopback
 * name or the address it listens on (bound to every address, 0.0.0.0 or ::, that is the
 * host's own addresses and name). A page on another site that re-points its own DNS name
 * at 127.0.0.1 (DNS rebinding) reaches the server from the victim's browser with its own
 * name in Host: that is what this stops.
 */
export function hostCheck(listen: string): (header: string | undefined) => string | undefined {
  const served = new Set([listen.toLowerCase()]);
  if (listen === '0.0.0.0' || listen === '::') {
    served.add(hostname().toLowerCase());
    for (const a of Object.values(networkInterfaces()).flat()) if (a) served.add(a.address.toLowerCase());
  }
  return (header) => {
    if (header === undefined) return 'a request without a Host header is refused';
    const name = hostName(header);
    if (isLoopback(name) || served.has(name)) return undefined;
    // Says what it answers to without listing the host's addresses to the page that asked.
    return `Host "${header.slice(0, 100)}" is not a name of this server, which answers only to loopback names and the address it listens on, so that no other site can reach it through DNS rebinding; use one of those (a reverse proxy must pass one as Host)`;
  };
}

function sameToken(given: string, token: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

/**
 * The token of an action: the Authorization header, or a form's field. Never the query
 * string: URLs end up in logs, shell history and a browser's history.
 */
export function tokenOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  // A form's field: the status page's actions work without JavaScript.
  const f = (req.body as { token?: unknown } | undefined)?.token;
  return typeof f === 'string' ? f.trim() : undefined;
}

/**
 * The token as the password of HTTP Basic authentication: how a browser reads the page
 * off loopback (it asks once, then sends it with every request, the event stream too).
 * Only for reading: a browser sends it by itself, so it never authorizes an action.
 */
function basicTokenOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (!auth?.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
  return decoded.slice(decoded.indexOf(':') + 1);
}

const isForm = (req: FastifyRequest) => req.headers['content-type']?.startsWith('application/x-www-form-urlencoded') ?? false;

/**
 * Serves one machine's controller, or a fleet (a repository of several machines): then
 * the actions and /api/status are the fleet's, and each machine's reads are under
 * /machines/NAME/ (status, history, events, and its routes: the page).
 */
export async function startServer<D extends Controller | Fleet>(ctrl: D, o: ServerOptions<D>): Promise<FastifyInstance> {
  if (!isLoopback(o.host) && !o.token) {
    throw new UsageError(`failed to start the API on ${o.host}:${o.port}: a non-loopback address needs a token (--token-file)`, { step: 'listen', input: o.host });
  }
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 });
  const authorized = (req: FastifyRequest) => {
    const t = tokenOf(req);
    return !!t && sameToken(t, o.token);
  };
  const refuse = (reply: FastifyReply) => reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'a valid token is needed (Authorization: Bearer TOKEN)' });

  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('content-security-policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'");
    reply.header('cache-control', 'no-store');
    return payload;
  });
  // Before anything else: a refused Host reads nothing and changes nothing.
  const refusedHost = hostCheck(o.host);
  app.addHook('onRequest', async (req, reply) => {
    const why = refusedHost(req.headers.host);
    if (why) await reply.code(421).send({ error: `misdirected request: ${why}` });
  });
  // Off loopback everything needs the token, except the webhook, which forges sign instead.
  app.addHook('onRequest', async (req, reply) => {
    const basic = basicTokenOf(req);
    if (isLoopback(o.host) || req.url.startsWith('/hooks/') || authorized(req) || (basic !== undefined && sameToken(basic, o.token))) return;
    await reply.code(401).header('www-authenticate', 'Basic realm="ramboot", charset="UTF-8"').send({ error: 'a valid token is needed (Authorization: Bearer TOKEN; a browser asks for it as the password)' });
  });
  // HTML forms post url-encoded fields (the status page's actions).
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))));

  if ('history' in ctrl) readRoutes(app, ctrl);
  else {
    app.get('/api/status', async () => ctrl.status());
    app.get('/api/events', (req, reply) => streamEvents(ctrl, req, reply));
  }
  for (const m of o.machines ?? []) {
    await app.register(async (sub) => {
      readRoutes(sub, m.ctrl);
      for (const r of m.routes) r(sub, m.ctrl);
    }, { prefix: `/machines/${m.name}` });
  }

  const action = (fn: (req: FastifyRequest) => unknown) => async (req: FastifyRequest, reply: FastifyReply) => {
    if (!authorized(req)) {
      return isForm(req) ? reply.code(401).type('text/plain; charset=utf-8').send('The token was refused; nothing changed. Go back and enter the API token.\n') : refuse(reply);
    }
    const result = await fn(req);
    // A form (the page without JavaScript) goes back to the page, which says what was done.
    return isForm(req) ? reply.redirect(`/?done=${req.url.split('/')[2]?.split('?')[0] ?? ''}`, 303) : reply.code(202).send(result);
  };
  app.post('/api/reconcile', action(async (req) => {
    const trigger = (req.query as { trigger?: string }).trigger === 'push' ? ({ kind: 'push', detail: 'git push' } as const) : ({ kind: 'manual' } as const);
    return ctrl.poll(trigger, true);
  }));
  app.post('/api/release/:commit', action(async (req) => ({ released: ctrl.release((req.params as { commit: string }).commit) })));
  app.post('/api/pause', action(async () => {
    ctrl.setPaused(true);
    return { paused: true };
  }));
  app.post('/api/resume', action(async () => {
    ctrl.setPaused(false);
    return { paused: false };
  }));

  await app.register(async (hooks) => {
    hooks.removeAllContentTypeParsers();
    // The signature covers the raw bytes: the body is kept exactly as it came.
    hooks.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT }, (_req, body, done) => done(null, body));
    hooks.post('/hooks/git', async (req, reply) => {
      const body = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
      if (!o.webhookSecret) return reply.code(404).send({ error: 'webhooks are not configured (ramboot up --webhook-secret FILE)' });
      const v = judgeWebhook(req.headers, body, o.webhookSecret, ctrl.status().branch);
      // Only a delivery that proved the secret is shown as the last webhook: anyone who
      // can reach the endpoint could otherwise write the page's line. The forge's own
      // delivery log shows a refusal and its reason.
      if (v.kind !== 'refused') ctrl.recordWebhook({ at: new Date().toISOString(), form: v.form, status: v.status, result: `${v.kind}: ${v.reason}` });
      // Answer first: the poll runs after the reply (forges time out in 5 to 30 s).
      if (v.kind === 'accepted') setImmediate(() => void ctrl.poll({ kind: 'webhook', detail: v.form }));
      return reply.code(v.status).send({ result: v.kind, reason: v.reason });
    });
  });

  for (const r of o.routes ?? []) r(app, ctrl);
  await app.listen({ host: o.host, port: o.port });
  return app;
}

/** One machine's state: its status, its history and its events. */
function readRoutes(app: FastifyInstance, ctrl: Controller): void {
  app.get('/api/status', async () => ctrl.status());
  app.get('/api/history', async (req) => {
    const limit = Number((req.query as { limit?: string }).limit ?? 100);
    return ctrl.history.list(Number.isFinite(limit) && limit > 0 ? limit : 100);
  });
  app.get('/api/history/:id', async (req, reply) => {
    const r = ctrl.history.get((req.params as { id: string }).id);
    return r ?? reply.code(404).send({ error: 'no such reconcile' });
  });
  app.get('/api/history/:id/log', async (req, reply) => {
    const log = ctrl.history.logOf((req.params as { id: string }).id);
    if (log === undefined) return reply.code(404).send({ error: 'no such reconcile' });
    return reply.type('application/x-ndjson').send(log);
  });
  app.get('/api/events', (req, reply) => streamEvents(ctrl, req, reply));
}

/** Server-sent events of everything the controller emits; `?commit=` keeps one commit's. */
function streamEvents(ctrl: Pick<Controller, 'subscribe'>, req: FastifyRequest, reply: FastifyReply): void {
  const commit = (req.query as { commit?: string }).commit;
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-content-type-options': 'nosniff' });
  res.write(': ramboot events\n\n');
  const send = (e: Envelope) => {
    const about = e.commit ?? ('commit' in e.event ? e.event.commit : undefined);
    if (commit && !about?.startsWith(commit)) return;
    res.write(`data: ${JSON.stringify(e)}\n\n`);
  };
  const unsubscribe = ctrl.subscribe(send);
  // Clients and proxies cut connections that stay silent.
  const beat = setInterval(() => res.write(`data: ${JSON.stringify({ event: { kind: 'heartbeat', source: 'controller' } })}\n\n`), HEARTBEAT_MS);
  req.raw.on('close', () => {
    clearInterval(beat);
    unsubscribe();
  });
}
