import type { ControllerStatus } from '../controller.js';
import { OUTCOME, type Phase, type PhaseName, type ReconcileRecord } from '../history.js';
import type { DeliveryState } from '../notify/dispatch.js';
import type { NotifyState } from '../notify/notifier.js';
import type { Quarantined } from '../quarantine.js';
import { redactUrl } from '../../lib/net.js';
import { absolute, between, bytes, duration, outcomeBadge, outcomeLabel, plainBadge, shortCommit, time, toneOf, triggerText, type Tone } from './format.js';
import { html, raw, type Html } from './html.js';
import type { Progress, Seen } from './live.js';
import type { MachineFacts } from './probe.js';

// The status page: one server-rendered document that reads in full without JavaScript.
// Sections marked data-live are the ones the client script re-fetches when the event
// stream says something changed; the actions form is not among them, so a token being
// typed survives an update.

export interface PageModel {
  /** The machine's host name (ramboot.yaml host.name). */
  host: string;
  status: ControllerStatus;
  history: ReconcileRecord[];
  /** The id to page on from (older entries), when there are more. */
  older?: string;
  /** This is not the newest page. */
  paged: boolean;
  /** The record of the reconcile in progress (its phases so far). */
  currentRecord?: ReconcileRecord;
  progress?: Progress;
  machine: { facts?: MachineFacts; probing: boolean; seen?: Seen };
  notify?: NotifyState;
  /** A one-line result of a form action (?done=…). */
  flash?: string;
  now: number;
  /** Where this machine's page and reads are: '' for the one machine, /machines/NAME in a repository of several. */
  base?: string;
}

/** The phases a reconcile may pass through, in order (promote or rollback at the end). */
const PHASE_ORDER: PhaseName[] = ['queued', 'verify', 'build', 'plan', 'preflight', 'upload', 'reboot', 'health', 'promote', 'rollback', 'notify'];
/** The phases a reconcile that deploys goes through: shown ahead, greyed, until reached. */
const EXPECTED: PhaseName[] = ['queued', 'build', 'preflight', 'upload', 'reboot', 'health', 'promote'];

export function renderPage(m: PageModel): Html {
  const g = glance(m);
  return document(
    `${g.icon} ${m.host} · ramboot`,
    html`
      ${header(m, g)}
      <main>
        ${m.status.insecure ? html`<p id="insecure" class="insecure" role="alert"><strong>Insecure:</strong> ${m.status.insecure}</p>` : ''}
        ${m.flash ? html`<p class="flash" role="status">${m.flash}</p>` : ''}
        <div class="grid">${commitsCard(m)} ${machineCard(m)} ${controllerCard(m)}</div>
        ${actionsPanel(m)} ${nowSection(m)} ${quarantineSection(m.status.quarantine, m.now, m.base ?? '')} ${historySection(m)} ${notifySection(m)}
      </main>
      ${footer(m)}`,
    m.base,
  );
}

/** Two bars, like the logo: a data URL, so that no request is made for it. */
const FAVICON = `data:image/svg+xml,${encodeURIComponent('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect x="2" y="2" width="5" height="12" rx="1" fill="#2f5fd0"/><rect x="9" y="6" width="5" height="8" rx="1" fill="#1a7f4b"/></svg>')}`;

export function document(title: string, body: Html, base = ''): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>${title}</title>
<link rel="icon" href="${FAVICON}">
<link rel="stylesheet" href="/page/style.css">
<script src="/page/client.js" defer></script>
</head>
<body${base ? html` data-base="${base}"` : ''}>
${body}
</body>
</html>
`;
}

// ---------------------------------------------------------------- the glance

interface Glance {
  icon: string;
  tone: Tone;
  text: string;
}

/** The one line that says how the machine is doing. */
function glance(m: PageModel): Glance {
  const s = m.status;
  const last = s.lastAttempt;
  if (m.progress) return { icon: '●', tone: 'busy', text: `deploying ${shortCommit(m.progress.commit)}${m.progress.phase ? `: ${m.progress.phase}` : ''}` };
  if (s.paused) return { icon: '‖', tone: 'idle', text: 'automatic deploys paused' };
  if (last?.state === 'done' && last.outcome !== OUTCOME.PROMOTED && last.outcome !== OUTCOME.SUPERSEDED) {
    return { icon: toneOf(last.outcome) === 'bad' ? '✗' : '⚠', tone: toneOf(last.outcome), text: `last attempt ${outcomeLabel(last.outcome!)}: ${shortCommit(last.commit)}` };
  }
  if (s.running?.commit && s.running.commit === s.desired?.commit) return { icon: '✓', tone: 'ok', text: 'in sync: the machine runs the branch' };
  if (s.pending || s.retry) return { icon: '↻', tone: 'warn', text: 'a deploy is queued' };
  return { icon: '○', tone: 'idle', text: s.running ? 'the machine runs an older commit than the branch' : 'nothing deployed yet' };
}

function header(m: PageModel, g: Glance): Html {
  return html`<header class="bar">
    <a class="brand" href="/"><span class="logo" aria-hidden="true">▚</span> ramboot</a>
    <h1 class="host">${m.host}</h1>
    <p id="glance" class="glance ${g.tone}" data-live><span class="icon" aria-hidden="true">${g.icon}</span> ${g.text}</p>
    <span id="stream" class="stream" hidden>connecting…</span>
  </header>`;
}

// ---------------------------------------------------------------- the cards

function commitLine(commit: string | undefined, subject?: string, author?: string): Html {
  if (!commit) return html`<span class="muted">none yet</span>`;
  return html`<code class="commit" title="${commit}">${shortCommit(commit)}</code>${subject ? html` <span class="subject">${subject}</span>` : ''}${author ? html` <span class="muted">· ${author}</span>` : ''}`;
}

function commitsCard(m: PageModel): Html {
  const s = m.status;
  const last = s.lastAttempt;
  const runningInfo = m.history.find((r) => r.commit === s.running?.commit);
  const inSync = !!s.running?.commit && s.running.commit === s.desired?.commit;
  return html`<section id="commits" class="card wide" data-live aria-labelledby="commits-h">
    <h2 id="commits-h">Commits</h2>
    <dl class="rows">
      <dt>Desired <span class="muted">(${s.branch})</span></dt>
      <dd>${commitLine(s.desired?.commit, s.desired?.subject, s.desired?.author)}
        ${s.quarantine.some((q) => q.commit === s.desired?.commit && !q.buildId) ? html`<div>${plainBadge('⊘', 'quarantined: not deployed unless released', 'warn')}</div>` : ''}</dd>
      <dt>Running</dt>
      <dd>${commitLine(s.running?.commit, runningInfo?.subject)}
        ${s.running ? html`<div class="muted">build <code>${s.running.buildId ?? '?'}</code>, promoted ${time(s.running.since, m.now)}</div>` : ''}
        ${s.desired && s.running ? (inSync ? plainBadge('=', 'same as desired', 'ok') : plainBadge('≠', 'differs from desired', 'warn')) : ''}</dd>
      <dt>Last attempt</dt>
      <dd>${last
        ? html`${commitLine(last.commit, last.subject)}
          <div>${outcomeBadge(last)} ${last.reason ? html`<span class="reason">${last.reason}</span>` : ''} ${time(last.endedAt ?? last.startedAt ?? last.noticedAt, m.now)}</div>
          ${last.message ? html`<div class="message">${last.message}</div>` : ''}
          <a href="${m.base ?? ''}/history/${last.id}">details, log and plan →</a>`
        : html`<span class="muted">none yet</span>`}</dd>
    </dl>
  </section>`;
}

function meter(label: string, used: number, total: number): Html {
  const pct = total > 0 ? Math.round((used / total) * 100) : 0;
  return html`<meter min="0" max="${total}" low="${total * 0.75}" high="${total * 0.9}" optimum="0" value="${used}" aria-label="${label}"></meter>
    <span>${bytes(used)} of ${bytes(total)} (${pct} %)</span>`;
}

function machineCard(m: PageModel): Html {
  const f = m.machine.facts;
  const running = f?.running ?? m.machine.seen?.running;
  const rows: Html[] = [];
  if (running) {
    rows.push(html`<dt>Build</dt><dd><code>${running.build ?? running.cmdlineBuild ?? 'unknown'}</code>${running.commit ? html` <span class="muted">commit</span> <code>${shortCommit(running.commit)}</code>` : ''}</dd>`);
    rows.push(html`<dt>Slot</dt><dd>${running.slot ? html`<code>${running.slot}</code>${running.slot === 'new' ? html` ${plainBadge('●', 'trial boot', 'busy')}` : ''}` : html`<span class="muted">not booted by ramboot</span>`}</dd>`);
  }
  if (f?.uptimeS !== undefined) rows.push(html`<dt>Uptime</dt><dd>${duration(f.uptimeS * 1000)}</dd>`);
  if (f?.memory) rows.push(html`<dt>Memory</dt><dd>${meter('memory in use', f.memory.totalB - f.memory.availableB, f.memory.totalB)}</dd>`);
  if (f?.root) rows.push(html`<dt>Root (RAM)</dt><dd>${meter('root file system in use', f.root.usedB, f.root.sizeB)}</dd>`);
  if (f?.medium) {
    rows.push(html`<dt>Boot medium</dt><dd>${meter('boot medium in use', f.medium.usedB, f.medium.sizeB)}
      <div class="muted"><code>${f.medium.path}</code>${f.medium.mountedOn !== f.medium.path ? html` (not a mount point: on <code>${f.medium.mountedOn}</code>)` : ''}</div></dd>`);
  }
  if (f?.boot) {
    rows.push(
      f.boot.firmware === 'uefi'
        ? html`<dt>Boots</dt><dd>UEFI, systemd-boot <div class="muted">entries: ${f.boot.entries.length ? f.boot.entries.map((e, i) => html`${i ? ' ' : ''}<code>${e}</code>`) : 'none'}</div></dd>`
        : html`<dt>Boots</dt><dd>BIOS, syslinux</dd>`,
    );
  }
  const source = f
    ? f.ok
      ? html`asked over SSH ${time(f.at, m.now)}`
      : html`could not ask the machine ${time(f.at, m.now)}: ${f.error}`
    : m.machine.seen
      ? html`as a deploy saw it ${time(m.machine.seen.at, m.now)}`
      : html`not asked yet`;
  return html`<section id="machine" class="card" data-live ${m.machine.probing ? raw('data-refresh="3"') : ''} aria-labelledby="machine-h">
    <h2 id="machine-h">Machine</h2>
    ${rows.length ? html`<dl class="rows">${rows}</dl>` : ''}
    <p class="muted small">${source}${m.machine.probing ? ' · asking the machine…' : ''}</p>
  </section>`;
}

/** What is wrong with the controller itself, if anything. */
function healthProblems(m: PageModel): string[] {
  const s = m.status;
  const p: string[] = [];
  if (s.lastPoll && !s.lastPoll.ok) p.push(`the last look at the branch failed: ${s.lastPoll.error ?? 'unknown error'}`);
  if (s.retry) p.push(`a deploy waits to be tried again: ${s.retry.reason}`);
  for (const t of m.notify?.targets ?? []) if (failing(t)) p.push(`notifications to ${t.kind} fail`);
  if (m.notify?.problem) p.push(m.notify.problem);
  return p;
}

function failing(t: DeliveryState): boolean {
  return !!t.retrying || (!!t.lastFailure && t.last?.result === 'failed');
}

function controllerCard(m: PageModel): Html {
  const s = m.status;
  const problems = healthProblems(m);
  return html`<section id="controller" class="card" data-live aria-labelledby="controller-h">
    <h2 id="controller-h">Controller</h2>
    <p>${problems.length ? plainBadge('⚠', 'degraded', 'warn') : plainBadge('✓', 'healthy', 'ok')}
      ${s.paused ? plainBadge('‖', 'paused', 'idle') : ''}</p>
    ${problems.length ? html`<ul class="problems">${problems.map((p) => html`<li>${p}</li>`)}</ul>` : ''}
    <dl class="rows">
      <dt>Version</dt><dd>ramboot ${s.controller.version} <span class="muted">· pid ${s.controller.pid} · up since ${time(s.controller.startedAt, m.now)}</span></dd>
      <dt>Follows</dt><dd><code>${redactUrl(s.repo)}</code> <span class="muted">branch</span> <code>${s.branch}</code></dd>
      <dt>Signing</dt><dd>${s.signing.required ? html`required <span class="muted">(${s.signing.signers})</span>` : html`<span class="muted">not required</span>`}</dd>
      <dt>Last poll</dt><dd>${s.lastPoll ? html`${s.lastPoll.ok ? plainBadge('✓', 'ok', 'ok') : plainBadge('✗', 'failed', 'bad')} ${time(s.lastPoll.at, m.now)}${s.lastPoll.commit ? html` <code>${shortCommit(s.lastPoll.commit)}</code>` : ''}${s.lastPoll.error ? html`<div class="message">${s.lastPoll.error}</div>` : ''}` : html`<span class="muted">never</span>`}</dd>
      <dt>Last webhook</dt><dd>${s.lastWebhook ? html`${s.lastWebhook.status < 300 ? plainBadge('✓', String(s.lastWebhook.status), 'ok') : plainBadge('✗', String(s.lastWebhook.status), 'bad')} ${time(s.lastWebhook.at, m.now)} <span class="muted">${s.lastWebhook.form ?? 'unknown form'}</span><div class="message">${s.lastWebhook.result}</div>` : html`<span class="muted">none received</span>`}</dd>
    </dl>
  </section>`;
}

function actionsPanel(m: PageModel): Html {
  return html`<section class="panel actions" aria-labelledby="actions-h">
    <h2 id="actions-h">Actions</h2>
    <form id="actions" method="post" action="/api/reconcile">
      <div class="token">
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autocomplete="current-password" required spellcheck="false">
        <p class="muted small">The state directory's <code>api-token</code>. The page does not hold it; this tab keeps what you type.</p>
      </div>
      <div class="buttons">
        <button type="submit" formaction="/api/reconcile">↻ Reconcile now</button>
        <span id="pause-control" data-live>${m.status.paused
          ? html`<button type="submit" formaction="/api/resume">▶ Resume automatic deploys</button>`
          : html`<button type="submit" class="quiet" formaction="/api/pause">‖ Pause automatic deploys</button>`}</span>
      </div>
      <p id="action-result" class="small" role="status" aria-live="polite"></p>
    </form>
  </section>`;
}

// ---------------------------------------------------------------- now

function phaseList(phases: Phase[], current: PhaseName | undefined, now: number, since?: number): Html {
  const seen = new Map(phases.map((p) => [p.name, p]));
  const shown = PHASE_ORDER.filter((n) => seen.has(n) || n === current || EXPECTED.includes(n));
  return html`<ol class="steps">${shown.map((n) => {
    const p = seen.get(n);
    const state = n === current ? 'current' : p?.end ? 'done' : 'todo';
    const took = p ? duration(between(p.start, p.end, now)) : n === current && since ? duration(now - since) : '';
    return html`<li class="${state}"${state === 'current' ? raw(' aria-current="step"') : ''}><span class="name">${n}</span> <span class="took">${took}</span></li>`;
  })}</ol>`;
}

function progressDetail(p: Progress, now: number): Html {
  const parts: Html[] = [];
  if (p.step) parts.push(html`<p>${p.step}</p>`);
  if (p.upload && p.phase === 'upload') {
    parts.push(html`<p><label>Uploading <code>${p.upload.file}</code>: <progress max="${p.upload.total}" value="${p.upload.sent}"></progress> ${bytes(p.upload.sent)} of ${bytes(p.upload.total)}</label></p>`);
  }
  if (p.wait) parts.push(html`<p>Waiting for ${p.wait.what}: ${duration(p.wait.elapsedMs)}</p>`);
  if (p.check) parts.push(html`<p>Health check <strong>${p.check.check}</strong>: attempt ${p.check.attempt} of ${p.check.of}, ${p.check.ok ? 'ok' : 'not yet'}</p>`);
  if (p.output) parts.push(html`<pre class="tail">${p.output}</pre>`);
  parts.push(html`<p class="muted small">last event ${duration(now - p.lastEventAt)} ago</p>`);
  return html`${parts}`;
}

function nowSection(m: PageModel): Html {
  const s = m.status;
  const p = m.progress;
  const r = m.currentRecord;
  const body: Html[] = [];
  if (p) {
    body.push(html`<article class="current">
      <h3>${commitLine(p.commit, r?.subject, r?.author)}</h3>
      <p class="muted">${r ? html`${triggerText(r.trigger)} · started ${time(r.startedAt, m.now)}` : ''}</p>
      ${phaseList(r?.phases ?? [], p.phase, m.now, p.phaseSince)}
      ${progressDetail(p, m.now)}
    </article>`);
  } else {
    body.push(html`<p class="muted">Nothing runs now.</p>`);
  }
  if (s.pending) body.push(html`<p>Queued next: ${commitLine(s.pending.commit)} <span class="muted">(${triggerText(s.pending.trigger)}, ${time(s.pending.at, m.now)})</span></p>`);
  if (s.retry) body.push(html`<p>${plainBadge('↻', 'retry', 'warn')} ${commitLine(s.retry.commit)}: attempt ${s.retry.attempt + 1} ${time(s.retry.at, m.now)} <span class="message">${s.retry.reason}</span></p>`);
  return html`<section id="now" class="panel" data-live aria-labelledby="now-h"><h2 id="now-h">Now</h2>${body}</section>`;
}

// ---------------------------------------------------------------- quarantine

function quarantineSection(items: Quarantined[], now: number, base: string): Html {
  return html`<section id="quarantine" class="panel" data-live aria-labelledby="quarantine-h">
    <h2 id="quarantine-h">Quarantine <span class="count">${items.length}</span></h2>
    ${items.length === 0
      ? html`<p class="muted">No commit is held back.</p>`
      : html`<p class="muted small">Not deployed again by themselves; the next new commit is. Releasing one deploys it now.</p>
        <ul class="list">${items.map(
          (q) => html`<li>
            <div>${commitLine(q.commit)}${q.buildId ? html` <span class="muted">build <code>${q.buildId}</code> only</span>` : ''} ${outcomeBadge({ state: 'done', outcome: q.outcome as ReconcileRecord['outcome'] })} ${time(q.at, now)}</div>
            <div class="message">${q.message}</div>
            <div><a href="${base}/history/${q.reconcile}">the reconcile →</a>
              <button type="submit" form="actions" formaction="/api/release/${q.commit}" data-confirm="Release ${shortCommit(q.commit)} and deploy it now?">Release</button></div>
          </li>`,
        )}</ul>`}
  </section>`;
}

// ---------------------------------------------------------------- history

function phaseBar(r: ReconcileRecord, now: number): Html {
  const spans = r.phases.map((p) => ({ name: p.name, ms: between(p.start, p.end, now) }));
  const total = spans.reduce((a, s) => a + s.ms, 0);
  if (total === 0) return html``;
  return html`<div class="bar-chart" aria-hidden="true">${spans.map((s) => html`<span class="ph-${s.name}" style="flex-grow:${Math.max(s.ms, total / 200)}" title="${s.name} ${duration(s.ms)}"></span>`)}</div>`;
}

function phaseText(r: ReconcileRecord, now: number): string {
  return r.phases
    .filter((p) => p.name !== 'queued' || r.phases.length === 1)
    .map((p) => `${p.name} ${duration(between(p.start, p.end, now))}`)
    .join(' · ');
}

function historyEntry(r: ReconcileRecord, now: number, base: string): Html {
  const at = r.endedAt ?? r.startedAt ?? r.noticedAt;
  return html`<li class="entry tone-${r.state === 'running' ? 'busy' : toneOf(r.outcome)}" id="r-${r.id}">
    <div class="head">
      ${outcomeBadge(r)}
      <a class="commit-link" href="${base}/history/${r.id}">${commitLine(r.commit, r.subject)}</a>
      <span class="when">${time(at, now)}</span>
    </div>
    ${r.message ? html`<p class="message">${r.reason ? html`<span class="reason">${r.reason}</span> ` : ''}${r.message}</p>` : ''}
    <p class="meta">${r.author ? html`${r.author} · ` : ''}${triggerText(r.trigger)}${r.refresh ? ' · refresh' : ''} · ${phaseText(r, now)}${r.bytesSent !== undefined ? html` · sent ${bytes(r.bytesSent)}${r.imageBytes ? html` of ${bytes(r.imageBytes)}` : ''}` : ''}${r.buildId ? html` · build <code>${r.buildId}</code>` : ''}</p>
    ${phaseBar(r, now)}
  </li>`;
}

function historySection(m: PageModel): Html {
  return html`<section id="history" class="panel" data-live aria-labelledby="history-h">
    <h2 id="history-h">History</h2>
    <p class="muted small">Every reconcile, failed, rolled back and superseded ones included; newest first.${m.paged ? html` <a href="${m.base ?? ''}/">← newest</a>` : ''}</p>
    ${m.history.length ? html`<ol class="history">${m.history.map((r) => historyEntry(r, m.now, m.base ?? ''))}</ol>` : html`<p class="muted">No reconcile yet.</p>`}
    ${m.older ? html`<p><a href="${m.base ?? ''}/?before=${m.older}">older →</a></p>` : ''}
  </section>`;
}

// ---------------------------------------------------------------- notifications

function deliveryLine(t: DeliveryState, now: number): Html {
  const a = t.last;
  if (!a) return html`<span class="muted">nothing sent yet</span>`;
  const tone: Tone = a.result === 'failed' ? 'bad' : a.result === 'dropped' ? 'warn' : 'ok';
  const icon = tone === 'ok' ? '✓' : tone === 'bad' ? '✗' : '⤳';
  return html`${plainBadge(icon, a.result, tone)} ${a.event} of <code>${shortCommit(a.commit)}</code> (${a.state}) ${time(a.at, now)}${a.attempts > 1 ? html` <span class="muted">after ${a.attempts} attempts</span>` : ''}${a.status ? html` <span class="muted">HTTP ${a.status}</span>` : ''}`;
}

function notifySection(m: PageModel): Html {
  const n = m.notify;
  const targets = n?.targets ?? [];
  return html`<section id="notifications" class="panel" data-live aria-labelledby="notifications-h">
    <h2 id="notifications-h">Notifications</h2>
    ${n?.problem ? html`<p class="message bad-text">${n.problem}</p>` : ''}
    ${targets.length === 0
      ? html`<p class="muted">No notification sent since the controller started. Targets are set in ramboot.yaml (<code>notify</code>).</p>`
      : html`<ul class="list">${targets.map(
          (t) => html`<li class="${failing(t) ? 'failing' : ''}">
            <div><strong>${t.kind}</strong> ${t.where}${t.secretFrom ? html` <span class="muted">· secret from ${t.secretFrom}</span>` : ''}</div>
            <div>${deliveryLine(t, m.now)}</div>
            ${t.retrying ? html`<div>${plainBadge('↻', 'retrying', 'warn')} attempt ${t.retrying.attempt + 1} ${time(t.retrying.next, m.now)}: <span class="message">${t.retrying.error}</span></div>` : ''}
            ${t.lastFailure ? html`<div class="message">last failure ${time(t.lastFailure.at, m.now)}: ${t.lastFailure.error}</div>` : ''}
            <div class="muted small">${t.counts.delivered} delivered · ${t.counts.identical} identical, not re-posted · ${t.counts.failed} failed · ${t.queued} queued</div>
          </li>`,
        )}</ul>`}
    ${n?.config ? html`<p class="muted small">Targets from the ramboot.yaml of <code>${shortCommit(n.config.commit)}</code>${n.config.note ? html` (${n.config.note})` : ''}.</p>` : ''}
  </section>`;
}

function footer(m: PageModel): Html {
  return html`<footer>
    <span>ramboot ${m.status.controller.version}</span>
    <a href="${m.base ?? ''}/api/status">status JSON</a> <a href="${m.base ?? ''}/api/history">history JSON</a> <a href="/metrics">metrics</a>
    <span class="muted">rendered <time datetime="${new Date(m.now).toISOString()}">${absolute(new Date(m.now).toISOString())}</time></span>
  </footer>`;
}
