import type { ControllerStatus } from '../controller.js';
import type { FleetStatus, RolloutStatus } from '../fleet.js';
import { outcomeBadge, plainBadge, shortCommit, time } from './format.js';
import { html, type Html } from './html.js';
import { document } from './view.js';

// The page of a repository of several machines: the branch, the rollout in progress or
// the last one (each machine reached and how it ended, those not reached), and one row
// per machine linking to its own page (/machines/NAME/), which is the one-machine page.

export function renderFleet(s: FleetStatus, now: number, flash?: string): Html {
  const behind = s.machines.filter((m) => !current(m, s)).length;
  const title = behind === 0 && s.desired ? `✓ ${s.machines.length} machines in sync` : `${behind} of ${s.machines.length} machines behind`;
  return document(
    `${title} · ramboot`,
    html`<header class="bar">
        <a class="brand" href="/"><span class="logo" aria-hidden="true">▚</span> ramboot</a>
        <h1 class="host">${s.machines.length} machines</h1>
        <p id="glance" class="glance ${behind === 0 ? 'ok' : 'warn'}" data-live>${title}${s.paused ? ' · automatic deploys paused' : ''}</p>
        <span id="stream" class="stream" hidden>connecting…</span>
      </header>
      <main>
        ${flash ? html`<p class="flash" role="status">${flash}</p>` : ''}
        <section id="branch" class="panel" data-live>
          <h2>Branch <span class="muted">${s.branch}</span></h2>
          <p>${s.desired ? html`<code title="${s.desired.commit}">${shortCommit(s.desired.commit)}</code> ${s.desired.subject ?? ''}` : html`<span class="muted">not read yet</span>`}</p>
          ${s.retry ? html`<p class="muted">tried again ${time(s.retry.at, now)}: ${s.retry.reason}</p>` : ''}
        </section>
        ${s.rollout ? rolloutPanel(s.rollout, now) : ''}
        <section id="machines" class="panel" data-live>
          <h2>Machines</h2>
          <table class="machines">
            <thead><tr><th>Machine</th><th>Runs</th><th>Last attempt</th><th>Quarantined</th></tr></thead>
            <tbody>${s.machines.map(
              (m) => html`<tr id="machine-${m.machine}">
                <td><a href="/machines/${m.machine}/">${m.machine}</a></td>
                <td>${m.running?.commit ? html`<code title="${m.running.commit}">${shortCommit(m.running.commit)}</code> ${current(m, s) ? plainBadge('=', m.running.commit === s.desired?.commit ? 'the branch' : 'no change since', 'ok') : plainBadge('≠', 'behind', 'warn')}` : html`<span class="muted">nothing deployed yet</span>`}</td>
                <td>${m.lastAttempt ? html`${outcomeBadge(m.lastAttempt)} <span class="muted">${shortCommit(m.lastAttempt.commit)}</span>` : html`<span class="muted">none</span>`}</td>
                <td>${m.quarantine.length}</td>
              </tr>`,
            )}</tbody>
          </table>
        </section>
        <section class="panel actions">
          <h2>Actions</h2>
          <form id="actions" method="post" action="/api/reconcile">
            <div class="token"><label for="token">API token</label>
              <input id="token" name="token" type="password" autocomplete="current-password" required spellcheck="false"></div>
            <div class="buttons">
              <button type="submit" formaction="/api/reconcile">↻ Roll out the branch now</button>
              ${s.paused ? html`<button type="submit" formaction="/api/resume">▶ Resume automatic deploys</button>` : html`<button type="submit" class="quiet" formaction="/api/pause">‖ Pause automatic deploys</button>`}
            </div>
            <p id="action-result" class="small" role="status" aria-live="polite"></p>
          </form>
        </section>
      </main>
      <footer class="muted small"><a href="/api/status">status JSON</a> <a href="/metrics">metrics</a></footer>`,
  );
}

function rolloutPanel(r: RolloutStatus, now: number): Html {
  const state = r.endedAt ? (r.stoppedBy ? plainBadge('⊘', `stopped at ${r.stoppedBy}`, 'warn') : plainBadge('✓', 'done', 'ok')) : plainBadge('●', 'rolling out', 'busy');
  return html`<section id="rollout" class="panel" data-live>
    <h2>Rollout of <code title="${r.commit}">${shortCommit(r.commit)}</code> ${state}</h2>
    <p class="muted">started ${time(r.startedAt, now)}${r.endedAt ? html`, ended ${time(r.endedAt, now)}` : ''}</p>
    <ol>${r.machines.map((m) => html`<li><a href="/machines/${m.machine}/">${m.machine}</a>: ${m.outcome ? html`${outcomeBadge({ state: 'done', outcome: m.outcome })} ${m.message ?? ''}` : plainBadge('●', 'in progress', 'busy')}</li>`)}</ol>
    ${r.notReached.length ? html`<p>Not reached: ${r.notReached.join(', ')}</p>` : ''}
  </section>`;
}

/** The machine runs the branch's commit, or that commit changed nothing on it (NoChange). */
function current(m: ControllerStatus, s: FleetStatus): boolean {
  if (!s.desired) return false;
  return m.running?.commit === s.desired.commit || (m.lastAttempt?.commit === s.desired.commit && m.lastAttempt.reason === 'NoChange');
}
