import type { NotifyConfig } from '../../lib/config-schema.js';
import type { CommitState, Notice } from './notice.js';
import { jsonHeaders, secretRef, type Target } from './target.js';

// GitLab's commit status API: POST /api/v4/projects/{id or path}/statuses/{sha}, the
// context as `name`. GitLab's states differ: a deploy that started is `running`, a
// failure is `failed`; and it answers 400 "Cannot transition status" when asked for a
// state the status is already in (running → running), which means nothing is to change.

const STATE: Record<CommitState, string> = { pending: 'pending', success: 'success', failure: 'failed' };

function gitlabState(n: Notice): string {
  return n.event === 'started' ? 'running' : STATE[n.state];
}

export function gitlabTarget(c: NonNullable<NotifyConfig['gitlab']>): Target {
  const base = c.url.replace(/\/+$/, '');
  return {
    kind: 'gitlab',
    where: `project ${c.project} on ${new URL(base).host}`,
    secret: secretRef(c.token_file, c.token_env),
    status: true,
    request: (n, token) => ({
      url: `${base}/api/v4/projects/${encodeURIComponent(String(c.project))}/statuses/${n.commit}`,
      headers: jsonHeaders({ accept: 'application/json', 'private-token': token ?? '' }),
      body: JSON.stringify({ state: gitlabState(n), name: n.context, description: n.description, ...(n.link ? { target_url: n.link } : {}) }),
    }),
    unchanged: (status, body) => status === 400 && /cannot transition status/i.test(body),
  };
}
