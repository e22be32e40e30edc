import { logEvents, type ReconcileRecord } from '../history.js';
import { describeEvent, type RambootEvent } from '../render.js';
import { absolute, between, bytes, duration, outcomeBadge, time, triggerText } from './format.js';
import { html, type Html } from './html.js';
import { redactUrl } from '../../lib/net.js';
import { document } from './view.js';

// One reconcile on a page of its own: what it was, each phase with its times, the
// verdict and why, the plan, and its log (the events it emitted, as the terminal shows
// them, with the build's output lines).

/** A log longer than this shows its last lines; the raw log has all of them. */
const LOG_LINES_SHOWN = 2000;

export function renderEntry(r: ReconcileRecord, log: string, repo: string, now: number, base = ''): Html {
  const lines = logLines(log);
  const cut = Math.max(0, lines.length - LOG_LINES_SHOWN);
  return document(
    `${r.commit.slice(0, 12)} · ${r.outcome ?? 'running'} · ramboot`,
    html`<header class="bar">
        <a class="brand" href="/"><span class="logo" aria-hidden="true">▚</span> ramboot</a>
        <p class="glance"><a href="${base}/">← the status page</a></p>
      </header>
      <main>
        <section class="panel">
          <h1 class="entry-title">${outcomeBadge(r)} <code title="${r.commit}">${r.commit.slice(0, 12)}</code> ${r.subject ?? ''}</h1>
          ${r.message ? html`<p class="message">${r.reason ? html`<span class="reason">${r.reason}</span> ` : ''}${r.message}</p>` : ''}
          ${r.output ? html`<details open><summary>Output</summary><pre class="log">${r.output}</pre></details>` : ''}
          <dl class="rows">
            <dt>Commit</dt><dd><code>${r.commit}</code>${r.author ? html` by ${r.author}` : ''} <span class="muted">in ${redactUrl(repo)}</span></dd>
            <dt>Trigger</dt><dd>${triggerText(r.trigger)}${r.refresh ? ' (refresh with fresh packages)' : ''}, noticed ${time(r.noticedAt, now)}</dd>
            <dt>Started</dt><dd>${r.startedAt ? html`${time(r.startedAt, now)} <span class="muted">${absolute(r.startedAt)}</span>` : html`<span class="muted">never (it waited in the queue)</span>`}</dd>
            <dt>Ended</dt><dd>${r.endedAt ? html`${time(r.endedAt, now)} <span class="muted">${absolute(r.endedAt)}</span>` : html`<span class="muted">still running</span>`}</dd>
            ${r.buildId ? html`<dt>Build</dt><dd><code>${r.buildId}</code></dd>` : ''}
            ${r.bytesSent !== undefined ? html`<dt>Sent</dt><dd>${bytes(r.bytesSent)}${r.imageBytes ? html` of an image of ${bytes(r.imageBytes)}` : ''}</dd>` : ''}
            <dt>Id</dt><dd><code>${r.id}</code></dd>
          </dl>
        </section>
        <section class="panel" aria-labelledby="phases-h">
          <h2 id="phases-h">Phases</h2>
          <table class="phases">
            <thead><tr><th scope="col">Phase</th><th scope="col">Started</th><th scope="col">Took</th></tr></thead>
            <tbody>${r.phases.map((p) => html`<tr><th scope="row">${p.name}</th><td>${time(p.start, now)}</td><td>${p.end ? duration(between(p.start, p.end, now)) : html`<span class="muted">running, ${duration(between(p.start, undefined, now))}</span>`}</td></tr>`)}</tbody>
          </table>
        </section>
        <section class="panel" aria-labelledby="plan-h">
          <h2 id="plan-h">Plan</h2>
          ${planBlock(r.plan)}
        </section>
        <section class="panel" aria-labelledby="log-h">
          <h2 id="log-h">Log</h2>
          <p class="muted small">${lines.length} lines${cut ? `, the last ${LOG_LINES_SHOWN} shown` : ''} · <a href="${base}/api/history/${r.id}/log">raw (JSON lines)</a></p>
          ${lines.length ? html`<pre class="log">${lines.slice(cut).map((l) => html`<span class="${l.cls}"><span class="ts">${l.ts}</span> ${l.text}</span>\n`)}</pre>` : html`<p class="muted">No event was logged.</p>`}
        </section>
      </main>`,
    base,
  );
}

/** The plan of this build against the one running before it, as the controller recorded it. */
function planBlock(plan: ReconcileRecord['plan']): Html {
  if (!plan) return html`<p class="muted">No plan was recorded for this reconcile (it is made against the running build once the commit is built).</p>`;
  const what = plan.changes === 0 ? 'no change to the machine' : `${plan.changes} change${plan.changes === 1 ? '' : 's'} to the machine`;
  return html`<p>${what}, against build <code>${plan.against}</code></p><pre class="log">${plan.text}</pre>`;
}

interface LogLine {
  ts: string;
  text: string;
  cls: string;
}

/** The events of a reconcile's log as lines: what the terminal shows, plus commands' output and each phase. */
function logLines(log: string): LogLine[] {
  const out: LogLine[] = [];
  for (const e of logEvents<RambootEvent>(log)) {
    const ts = (e.ts ?? '').slice(11, 19);
    if (e.kind === 'output') out.push({ ts, text: e.line, cls: 'out' });
    else if (e.kind === 'phase') out.push({ ts, text: `▸ ${e.phase}`, cls: 'phase' });
    else {
      const text = describeEvent(e);
      if (text !== undefined) out.push({ ts, text, cls: e.kind === 'warn' ? 'warn' : '' });
    }
  }
  return out;
}
