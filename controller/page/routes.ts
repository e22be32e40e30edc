import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { packagePath } from '../../lib/package.js';
import type { Controller } from '../controller.js';
import type { History, ReconcileRecord } from '../history.js';
import type { NotifyState } from '../notify/notifier.js';
import { renderEntry } from './entry.js';
import type { Live } from './live.js';
import type { MachineProbe } from './probe.js';
import { renderPage } from './view.js';

// The status page's routes, registered through startServer's `routes` option, so the
// server's rules hold for them too (loopback or the token, the security headers). The
// page reads the controller's state when asked; nothing is cached but the two assets.

export interface PageOptions {
  /** The machine's host name, for the page's title. */
  host: string;
  live: Live;
  machine?: MachineProbe;
  notifications?: () => NotifyState;
  /** Where the page is served: '' for the one machine, /machines/NAME in a repository of several. */
  base?: string;
}

/** Reconciles per page of history. */
const PAGE_SIZE = 50;

const ASSETS = {
  'style.css': { type: 'text/css; charset=utf-8', body: readFileSync(packagePath('controller', 'page', 'style.css'), 'utf8') },
  'client.js': { type: 'text/javascript; charset=utf-8', body: readFileSync(packagePath('controller', 'page', 'client.js'), 'utf8') },
};

/** What a form action (without JavaScript) did, said after the redirect back. */
const DONE: Record<string, string> = {
  reconcile: 'Reconcile requested: the branch is being looked at now.',
  release: 'Released: the commit is deployed now.',
  pause: 'Automatic deploys are paused.',
  resume: 'Automatic deploys are resumed.',
};

/** The page's style and script, served at /page/ once for every machine's page. */
export function assetRoutes(app: FastifyInstance): void {
  app.get('/page/:asset', async (req, reply) => {
    const a = ASSETS[(req.params as { asset: string }).asset as keyof typeof ASSETS];
    return a ? reply.type(a.type).send(a.body) : reply.code(404).send({ error: 'no such asset' });
  });
}

/** The machine's page, its history entries, and what its page asks for; with the assets for the one machine. */
export function pageRoutes(o: PageOptions): (app: FastifyInstance, ctrl: Controller) => void {
  return (app, ctrl) => {
    if (!o.base) assetRoutes(app);
    app.get('/', async (req, reply) => {
      const q = req.query as { before?: string; done?: string };
      const status = ctrl.status();
      const page = historyPage(ctrl.history, q.before, PAGE_SIZE);
      const progress = o.live.active(status);
      const html = renderPage({
        host: o.host,
        status,
        history: page.records,
        older: page.older,
        paged: !!q.before,
        progress,
        currentRecord: progress && ctrl.history.get(progress.reconcile),
        machine: { facts: o.machine?.get(), probing: o.machine?.probing ?? false, seen: o.live.lastSeen() },
        notify: o.notifications?.(),
        flash: q.done ? DONE[q.done] : undefined,
        now: Date.now(),
        base: o.base,
      });
      return reply.type('text/html; charset=utf-8').send(html.text);
    });
    app.get('/history/:id', async (req, reply) => {
      const id = (req.params as { id: string }).id;
      const r = ctrl.history.get(id);
      if (!r) return reply.code(404).type('text/plain; charset=utf-8').send(`no reconcile ${id} in the history (it may have been pruned: watch.history keeps the newest)\n`);
      return reply.type('text/html; charset=utf-8').send(renderEntry(r, ctrl.history.logOf(id) ?? '', ctrl.status().repo, Date.now(), o.base).text);
    });
    app.get('/api/machine', async () => ({ facts: o.machine?.get(), probing: o.machine?.probing ?? false, seen: o.live.lastSeen() }));
    app.get('/api/notifications', async () => o.notifications?.() ?? { targets: [] });
  };
}

/**
 * One page of the history, newest first, from `before` (an id) on. The directory is
 * listed (ids sort by time) and only the page's records are read.
 */
function historyPage(history: History, before: string | undefined, size: number): { records: ReconcileRecord[]; older?: string } {
  const ids = history.ids().reverse();
  const start = before ? ids.findIndex((id) => id < before) : 0;
  if (start < 0) return { records: [] };
  const slice = ids.slice(start, start + size);
  const records = slice.map((id) => history.get(id)).filter((r): r is ReconcileRecord => !!r);
  return { records, older: start + size < ids.length ? slice.at(-1) : undefined };
}
