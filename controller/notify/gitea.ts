import type { NotifyConfig } from '../../lib/config-schema.js';
import { jsonHeaders, secretRef, type Target } from './target.js';

// Gitea's commit status API, which Forgejo keeps: POST /api/v1/repos/{owner}/{repo}/statuses/{sha}
// with GitHub's fields and states, and the token as `Authorization: token …`.

export function giteaTarget(kind: 'gitea' | 'forgejo', c: NonNullable<NotifyConfig['gitea']>): Target {
  const base = c.url.replace(/\/+$/, '');
  return {
    kind,
    where: `${c.repo} on ${new URL(base).host}`,
    secret: secretRef(c.token_file, c.token_env),
    status: true,
    request: (n, token) => ({
      url: `${base}/api/v1/repos/${c.repo}/statuses/${n.commit}`,
      headers: jsonHeaders({ accept: 'application/json', authorization: `token ${token}` }),
      body: JSON.stringify({ state: n.state, context: n.context, description: n.description, ...(n.link ? { target_url: n.link } : {}) }),
    }),
  };
}
