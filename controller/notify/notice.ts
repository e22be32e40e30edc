import { randomBytes } from 'node:crypto';
import { REASON, type Reason } from '../../deploy/verdict.js';
import { OUTCOME, type OutcomeName, type ReconcileRecord } from '../history.js';

// What a notification says, whatever carries it: one Notice per deploy start and per
// verdict, built from the reconcile's history record. Each target (a forge's commit
// status, the generic webhook, ntfy) turns it into its own request.

export type NoticeEvent = 'started' | 'verdict';

/** A commit status, in the words GitHub, Gitea and Forgejo share (GitLab maps them). */
export type CommitState = 'pending' | 'success' | 'failure';

export interface Notice {
  /** Unique per notice and the same across its retries (X-Ramboot-Delivery). */
  id: string;
  event: NoticeEvent;
  machine: string;
  /** The commit status context: one per machine. */
  context: string;
  reconcile: string;
  commit: string;
  subject?: string;
  author?: string;
  trigger: string;
  outcome?: OutcomeName;
  reason?: Reason;
  message: string;
  state: CommitState;
  /** One line of at most DESCRIPTION_MAX characters. */
  description: string;
  /** The history entry on the status page, when notify.url says where the page is. */
  link?: string;
  at: string;
  /** The machine did not change (the build already ran there): told without fuss. */
  quiet: boolean;
}

/** GitHub refuses a status description longer than this (422). */
const DESCRIPTION_MAX = 140;

/** How a reconcile ended, in words. */
export const OUTCOME_TEXT: Record<OutcomeName, string> = {
  promoted: 'promoted',
  'build-failed': 'build failed',
  'upload-failed': 'upload failed (nothing changed on the machine)',
  'trial-not-healthy': 'rolled back: trial not healthy',
  'trial-unreachable': 'rolled back: trial unreachable',
  'medium-damaged': 'boot medium damaged',
  'untrusted-commit': 'untrusted commit',
  superseded: 'superseded',
  'retry-later': 'waiting to retry',
  interrupted: 'interrupted',
  'rollout-stopped': 'not deployed: the rollout stopped at another machine',
};

/** Still on its way to a verdict: the commit status stays pending. */
const NOT_FINAL: OutcomeName[] = [OUTCOME.RETRY, OUTCOME.INTERRUPTED];

function stateOf(outcome: OutcomeName): CommitState {
  if (NOT_FINAL.includes(outcome)) return 'pending';
  return outcome === OUTCOME.PROMOTED ? 'success' : 'failure';
}

/** Cuts a text to `max` characters (not UTF-16 units), ending it with "…" when cut. */
function clip(text: string, max = DESCRIPTION_MAX): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  const chars = [...flat];
  return chars.length <= max ? flat : `${chars.slice(0, max - 1).join('')}…`;
}

export interface NoticeContext {
  machine: string;
  /** The status page's public address (notify.url). */
  pageUrl?: string;
}

function base(record: ReconcileRecord, ctx: NoticeContext, event: NoticeEvent) {
  return {
    id: `${record.id}-${event}-${randomBytes(3).toString('hex')}`,
    event,
    machine: ctx.machine,
    context: `ramboot/${ctx.machine}`,
    reconcile: record.id,
    commit: record.commit,
    subject: record.subject,
    author: record.author,
    trigger: record.trigger.detail ? `${record.trigger.kind} (${record.trigger.detail})` : record.trigger.kind,
    link: ctx.pageUrl ? `${ctx.pageUrl.replace(/\/+$/, '')}/history/${encodeURIComponent(record.id)}` : undefined,
    at: new Date().toISOString(),
  };
}

export function startedNotice(record: ReconcileRecord, ctx: NoticeContext): Notice {
  const message = `deploying ${record.commit.slice(0, 12)} to ${ctx.machine}${record.refresh ? ' (refresh with fresh packages)' : ''}`;
  return { ...base(record, ctx, 'started'), message, state: 'pending', description: clip(`${message}: building`), quiet: false };
}

export function verdictNotice(record: ReconcileRecord, outcome: OutcomeName, message: string, ctx: NoticeContext): Notice {
  const label = OUTCOME_TEXT[outcome];
  // The controller's messages often start with the verdict's words already.
  const line = message.toLowerCase().startsWith(label.split(':')[0]!) ? message : `${label}: ${message}`;
  return {
    ...base(record, ctx, 'verdict'),
    outcome,
    reason: record.reason,
    message,
    state: stateOf(outcome),
    description: clip(line),
    quiet: record.reason === REASON.ALREADY_RUNNING || record.reason === REASON.REFRESH_QUARANTINED,
  };
}
