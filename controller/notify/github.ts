import type { NotifyConfig } from '../../lib/config-schema.js';
import { jsonHeaders, secretRef, type Target } from './target.js';

// GitHub's commit status API: POST /repos/{owner}/{repo}/statuses/{sha}, one context per
// machine. GitHub keeps every status posted (up to 1,000 per commit and context), so an
// identical one is not posted again (the dispatcher remembers what it posted).

export function githubTarget(c: NonNullable<NotifyConfig['github']>): Target {
  const api = c.url.replace(/\/+$/, '');
  return {
    kind: 'github',
    where: `${c.repo} on ${new URL(api).host}`,
    secret: secretRef(c.token_file, c.token_env),
    status: true,
    request: (n, token) => ({
      url: `${api}/repos/${c.repo}/statuses/${n.commit}`,
      headers: jsonHeaders({ accept: 'application/vnd.github+json', 'x-github-api-version': '2022-11-28', authorization: `Bearer ${token}` }),
      body: JSON.stringify({ state: n.state, context: n.context, description: n.description, ...(n.link ? { target_url: n.link } : {}) }),
    }),
  };
}
