import type { Running } from '../../deploy/running.js';
import type { ControllerStatus, Envelope } from '../controller.js';
import type { Controller } from '../controller.js';
import type { PhaseName } from '../history.js';

// What the page knows only from the event stream: how far the reconcile in progress has
// got inside its phase (bytes uploaded, what it waits for, the health check being
// tried, the build's last output line), and what the machine said it runs when a deploy
// last asked it. Kept in memory; the history records hold everything else.

export interface Progress {
  reconcile: string;
  commit: string;
  phase?: PhaseName;
  /** When the phase began (ms). */
  phaseSince: number;
  step?: string;
  upload?: { file: string; sent: number; total: number };
  wait?: { what: string; elapsedMs: number };
  check?: { check: string; ok: boolean; attempt: number; of: number };
  output?: string;
  lastEventAt: number;
}

export interface Seen {
  at: string;
  running: Running;
}

/** A reconcile the controller no longer reports as running is shown this long after its last event, at most. */
const STALE_MS = 60_000;

export class Live {
  private progress?: Progress;
  private seen?: Seen;

  attach(ctrl: Pick<Controller, 'subscribe'>): () => void {
    return ctrl.subscribe((e) => this.onEvent(e));
  }

  /**
   * The reconcile in progress: the controller's own (status.current) with what the
   * events said of it; or, between two status reads, the one the events are about.
   */
  active(status: ControllerStatus, now = Date.now()): Progress | undefined {
    const p = this.progress;
    const cur = status.current;
    if (cur) {
      const base: Progress = p?.reconcile === cur.reconcile ? p : { reconcile: cur.reconcile, commit: cur.commit, phaseSince: Date.parse(cur.startedAt ?? '') || now, lastEventAt: now };
      return { ...base, phase: cur.phase ?? base.phase };
    }
    return p && now - p.lastEventAt < STALE_MS ? p : undefined;
  }

  /** What the machine said it runs the last time a deploy asked it. */
  lastSeen(): Seen | undefined {
    return this.seen;
  }

  private onEvent(e: Envelope): void {
    const ev = e.event;
    if (ev.kind === 'running') this.seen = { at: new Date().toISOString(), running: ev.running };
    if (ev.kind === 'reconciled') {
      if (this.progress?.reconcile === ev.reconcile) this.progress = undefined;
      return;
    }
    if (!e.reconcile || !e.commit) return;
    const now = Date.now();
    if (this.progress?.reconcile !== e.reconcile) this.progress = { reconcile: e.reconcile, commit: e.commit, phaseSince: now, lastEventAt: now };
    const p = this.progress;
    p.lastEventAt = now;
    switch (ev.kind) {
      case 'phase':
        if (p.phase !== ev.phase) Object.assign(p, { phase: ev.phase, phaseSince: now, wait: undefined, check: undefined, output: undefined });
        break;
      case 'step':
        p.step = ev.message;
        break;
      case 'upload':
        p.upload = { file: ev.file.split('/').pop() ?? ev.file, sent: ev.sent, total: ev.total };
        break;
      case 'wait':
        p.wait = { what: ev.what, elapsedMs: ev.elapsedMs };
        break;
      case 'check':
        p.check = { check: ev.event.check, ok: ev.event.ok, attempt: ev.event.attempt, of: ev.event.of };
        break;
      case 'output':
        p.output = ev.line.slice(0, 300);
        break;
    }
  }
}
