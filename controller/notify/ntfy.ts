import type { NotifyConfig } from '../../lib/config-schema.js';
import type { OutcomeName } from '../history.js';
import { OUTCOME_TEXT, type Notice } from './notice.js';
import { jsonHeaders, originOf, secretRef, type Target } from './target.js';

// ntfy (ntfy.sh or one's own server): a push notification to a phone, published as JSON
// to the server's root URL, so titles keep their UTF-8 (headers would not). Priority
// follows the verdict: a rollback wakes the phone, a deploy that changed nothing does not.

/** ntfy's priorities: 1 min, 2 low, 3 default, 4 high, 5 urgent. */
const PRIORITY: Record<OutcomeName, number> = {
  promoted: 3,
  'build-failed': 4,
  'upload-failed': 4,
  'trial-not-healthy': 4,
  'trial-unreachable': 4,
  'medium-damaged': 5,
  'untrusted-commit': 4,
  superseded: 2,
  'retry-later': 3,
  interrupted: 2,
  'rollout-stopped': 3,
};

/** Emoji shortcodes ntfy shows before the title. */
const TAG: Record<OutcomeName, string> = {
  promoted: 'white_check_mark',
  'build-failed': 'x',
  'upload-failed': 'x',
  'trial-not-healthy': 'rewind',
  'trial-unreachable': 'rewind',
  'medium-damaged': 'rotating_light',
  'untrusted-commit': 'no_entry',
  superseded: 'fast_forward',
  'retry-later': 'hourglass',
  interrupted: 'pause_button',
  'rollout-stopped': 'stop_sign',
};

function priorityOf(n: Notice): number {
  if (n.quiet) return 1;
  return n.outcome ? PRIORITY[n.outcome] : 2;
}

function ntfyMessage(n: Notice): { title: string; message: string; priority: number; tags: string[] } {
  const what = n.outcome ? OUTCOME_TEXT[n.outcome] : 'deploy started';
  return {
    title: `${n.machine}: ${what} (${n.commit.slice(0, 12)})`,
    message: [n.subject && `${n.subject}${n.author ? ` (${n.author})` : ''}`, n.message].filter(Boolean).join('\n'),
    priority: priorityOf(n),
    tags: [n.outcome ? TAG[n.outcome] : 'rocket'],
  };
}

export function ntfyTarget(c: NonNullable<NotifyConfig['ntfy']>): Target {
  const base = c.url.replace(/\/+$/, '');
  return {
    kind: 'ntfy',
    // Whoever knows a topic on a public server can read it: only a hint of it is shown.
    where: `topic ${c.topic.slice(0, 3)}… on ${originOf(base)}`,
    secret: secretRef(c.token_file, c.token_env),
    status: false,
    request: (n, token) => ({
      url: `${base}/`,
      headers: jsonHeaders(token ? { authorization: `Bearer ${token}` } : {}),
      body: JSON.stringify({ topic: c.topic, ...ntfyMessage(n), ...(n.link ? { click: n.link } : {}) }),
    }),
  };
}
