// The status page's live updates. The server renders everything; this script only
// listens to the controller's event stream (/api/events) and, when something happened,
// fetches the page again and swaps in the sections marked data-live. It also keeps
// relative times current and sends the actions with the token as a header, so the
// page works the same, only without reloading. Without it the page is complete.
'use strict';

(() => {
  const QUICK_MS = 150;
  const PROGRESS_MS = 1000;
  const PROGRESS = new Set(['upload', 'wait', 'output', 'check']);
  const stream = document.getElementById('stream');
  let timer = null;
  let due = 0;
  let inFlight = false;
  let again = false;

  function say(state, text) {
    if (!stream) return;
    stream.hidden = false;
    stream.className = `stream ${state}`;
    stream.textContent = text;
  }

  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    try {
      const res = await fetch(location.href, { headers: { accept: 'text/html' }, cache: 'no-store' });
      if (!res.ok) return;
      const next = new DOMParser().parseFromString(await res.text(), 'text/html');
      for (const fresh of next.querySelectorAll('[data-live][id]')) {
        const old = document.getElementById(fresh.id);
        if (old) old.replaceWith(document.importNode(fresh, true));
      }
      document.title = next.title;
      tick();
      watchProbe();
    } catch {
      // The next event or the next tick tries again.
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        schedule(QUICK_MS);
      }
    }
  }

  // One fetch at a time; a sooner request moves a later one forward.
  function schedule(ms) {
    const at = Date.now() + ms;
    if (timer !== null && due <= at) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(() => {
      timer = null;
      void refresh();
    }, ms);
  }

  function connect() {
    // A machine's page in a repository of several lives under /machines/NAME.
    const events = new EventSource(`${document.body.dataset.base || ''}/api/events`);
    events.onopen = () => {
      say('on', 'live');
      schedule(QUICK_MS);
    };
    events.onerror = () => say('off', 'reconnecting…');
    events.onmessage = (m) => {
      let kind = '';
      try {
        kind = JSON.parse(m.data).event.kind;
      } catch {
        return;
      }
      if (kind === 'heartbeat') return;
      schedule(PROGRESS.has(kind) ? PROGRESS_MS : QUICK_MS);
    };
  }

  // Relative times, as the server writes them.
  function relative(iso) {
    const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    const a = Math.abs(s);
    const put = (n, unit) => (s < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`);
    if (a < 5) return 'just now';
    if (a < 60) return put(a, 's');
    if (a < 3600) return put(Math.round(a / 60), 'min');
    if (a < 172800) return put(Math.round(a / 3600), 'h');
    return put(Math.round(a / 86400), 'days');
  }

  function tick() {
    for (const t of document.querySelectorAll('time[data-rel]')) t.textContent = relative(t.dateTime);
  }

  // The machine card asks to be fetched again while a probe runs.
  function watchProbe() {
    const card = document.querySelector('[data-refresh]');
    if (card) setTimeout(() => schedule(0), Number(card.getAttribute('data-refresh')) * 1000);
  }

  function actions() {
    const form = document.getElementById('actions');
    if (!form) return;
    const input = form.querySelector('input[name="token"]');
    const result = document.getElementById('action-result');
    const saved = sessionStorage.getItem('ramboot-token');
    if (saved && input) input.value = saved;
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const button = e.submitter;
      const question = button && button.getAttribute('data-confirm');
      if (question && !confirm(question)) return;
      const url = (button && button.formAction) || form.action;
      result.className = 'small';
      result.textContent = 'sending…';
      try {
        const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${input.value.trim()}` } });
        if (res.status === 401) {
          result.className = 'small bad';
          result.textContent = 'The token was refused; nothing changed.';
          sessionStorage.removeItem('ramboot-token');
          return;
        }
        if (!res.ok) {
          result.className = 'small bad';
          result.textContent = `The controller answered HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`;
          return;
        }
        sessionStorage.setItem('ramboot-token', input.value.trim());
        result.className = 'small ok';
        result.textContent = `Done: ${new URL(url).pathname.split('/')[2]}.`;
        schedule(0);
      } catch (err) {
        result.className = 'small bad';
        result.textContent = `Could not reach the controller: ${err}`;
      }
    });
  }

  actions();
  tick();
  watchProbe();
  setInterval(tick, 15000);
  if ('EventSource' in window) connect();
})();
