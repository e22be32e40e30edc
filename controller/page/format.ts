import type { OutcomeName, ReconcileRecord } from '../history.js';
import { html, type Html } from './html.js';

// How the page writes times, sizes and verdicts. Every verdict is a badge with an icon
// and a word, so it reads without colour; every time is relative, with the absolute
// time in <time datetime> (and its title) for whoever needs it.

export type Tone = 'ok' | 'bad' | 'warn' | 'idle' | 'busy';

interface Badge {
  icon: string;
  label: string;
  tone: Tone;
}

const OUTCOME_BADGE: Record<OutcomeName, Badge> = {
  promoted: { icon: '✓', label: 'promoted', tone: 'ok' },
  'build-failed': { icon: '✗', label: 'build failed', tone: 'bad' },
  'upload-failed': { icon: '✗', label: 'upload failed', tone: 'bad' },
  'trial-not-healthy': { icon: '↩', label: 'rolled back: not healthy', tone: 'warn' },
  'trial-unreachable': { icon: '↩', label: 'rolled back: unreachable', tone: 'warn' },
  'medium-damaged': { icon: '⚠', label: 'medium damaged', tone: 'bad' },
  'untrusted-commit': { icon: '⊘', label: 'untrusted commit', tone: 'bad' },
  superseded: { icon: '⤳', label: 'superseded', tone: 'idle' },
  'retry-later': { icon: '↻', label: 'retry later', tone: 'warn' },
  interrupted: { icon: '‖', label: 'interrupted', tone: 'idle' },
  'rollout-stopped': { icon: '⊘', label: 'rollout stopped', tone: 'warn' },
};

const RUNNING: Badge = { icon: '●', label: 'running', tone: 'busy' };

function badge(b: Badge, extra?: string): Html {
  return html`<span class="badge ${b.tone}"><span class="icon" aria-hidden="true">${b.icon}</span> ${b.label}${extra ? html` <span class="extra">${extra}</span>` : ''}</span>`;
}

export function outcomeBadge(r: Pick<ReconcileRecord, 'state' | 'outcome'>): Html {
  return badge(r.state === 'running' || !r.outcome ? RUNNING : OUTCOME_BADGE[r.outcome]);
}

export function outcomeLabel(outcome: OutcomeName): string {
  return OUTCOME_BADGE[outcome].label;
}

export function toneOf(outcome: OutcomeName | undefined): Tone {
  return outcome ? OUTCOME_BADGE[outcome].tone : 'busy';
}

export function plainBadge(icon: string, label: string, tone: Tone): Html {
  return badge({ icon, label, tone });
}

export function shortCommit(commit: string | undefined): string {
  return commit ? commit.slice(0, 12) : '—';
}

/** "just now", "5 s ago", "3 min ago", "2 h ago", "4 days ago"; "in 30 s" for the future. */
export function relative(iso: string, now: number): string {
  const s = Math.round((Date.parse(iso) - now) / 1000);
  const a = Math.abs(s);
  const say = (n: number, unit: string) => (s < 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`);
  if (a < 5) return 'just now';
  if (a < 60) return say(a, 's');
  if (a < 3600) return say(Math.round(a / 60), 'min');
  if (a < 86_400 * 2) return say(Math.round(a / 3600), 'h');
  return say(Math.round(a / 86_400), 'days');
}

/** The absolute time a person reads: "2024-05-01 14:03:07 UTC". */
export function absolute(iso: string): string {
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
}

export function time(iso: string | undefined, now: number): Html {
  if (!iso) return html`<span class="muted">never</span>`;
  return html`<time datetime="${iso}" title="${absolute(iso)}" data-rel>${relative(iso, now)}</time>`;
}

/** "820 ms", "14.2 s", "3 min 05 s", "1 h 02 min". */
export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

export function between(start: string, end: string | undefined, now: number): number {
  return Math.max(0, (end ? Date.parse(end) : now) - Date.parse(start));
}

export function bytes(n: number | undefined): string {
  if (n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** What made a reconcile start, in words. */
export function triggerText(t: ReconcileRecord['trigger']): string {
  const words: Record<string, string> = {
    start: 'controller start',
    ref: 'branch moved',
    poll: 'poll',
    webhook: 'webhook',
    push: 'git push',
    manual: 'manual',
    refresh: 'refresh',
    release: 'released',
    retry: 'retry',
  };
  const word = words[t.kind] ?? t.kind;
  return t.detail && t.detail !== word ? `${word} (${t.detail})` : word;
}
