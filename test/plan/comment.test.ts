import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { TransientError, UsageError } from '../../lib/errors.js';
import { commentTarget, postComment, type CommentTarget, type Forge } from '../../plan/comment.js';
import { planMarker } from '../../plan/markdown.js';
import { forgeStandin, type ForgeStandin } from './forge-standin.js';
import { freePort } from '../helpers/ramboot.js';

// The sticky plan comment against stand-ins for the forges' APIs (a local HTTP server
// that answers like GitHub or like Gitea and Forgejo, and records what it was asked).

const TOKEN = 'test-token-not-a-secret';
const REPO = 'alice/nas-config';
const PR = 7;

let standin: ForgeStandin | undefined;
afterEach(async () => {
  await standin?.close();
  standin = undefined;
});

function target(forge: Forge, s: ForgeStandin): CommentTarget {
  return { forge, apiUrl: s.apiUrl, repository: REPO, pr: PR, token: TOKEN };
}

const cases: [string, Forge, 'github' | 'gitea'][] = [
  ['GitHub', 'github', 'github'],
  ['Gitea', 'gitea', 'gitea'],
  ['Forgejo', 'forgejo', 'gitea'],
];

describe('the plan comment on a pull request', () => {
  for (const [name, forge, api] of cases) {
    it(`against a stand-in for the ${name} API: the first run creates the comment, the second updates it, another machine's comment is left alone`, async () => {
      standin = await forgeStandin(api, TOKEN, REPO, PR);
      const other = `${planMarker('nas-2')}\n### ramboot plan for nas-2: 1 change`;
      standin.comments.push({ id: 1, body: 'Looks good to me', html_url: 'x' }, { id: 2, body: other, html_url: 'y' });
      const marker = planMarker('nas');

      const first = await postComment(target(forge, standin), marker, `${marker}\nfirst plan`);
      expect(first.action).toBe('created');
      const created = standin.comments.filter((c) => c.body.includes(marker));
      expect(created.map((c) => c.body)).toEqual([`${marker}\nfirst plan`]);

      standin.requests.length = 0;
      const second = await postComment(target(forge, standin), marker, `${marker}\nsecond plan`);
      expect(second).toMatchObject({ action: 'updated', id: first.id });
      expect(standin.comments.filter((c) => c.body.includes(marker)).map((c) => c.body)).toEqual([`${marker}\nsecond plan`]);
      expect(standin.comments.find((c) => c.id === 2)!.body).toBe(other);
      expect(standin.comments).toHaveLength(3);

      const writes = standin.requests.filter((r) => r.method !== 'GET');
      expect(writes.map((r) => `${r.method} ${r.path}`)).toEqual([`PATCH ${api === 'gitea' ? '/api/v1' : ''}/repos/${REPO}/issues/comments/${first.id}`]);
      expect(standin.requests.every((r) => r.authorization === (api === 'github' ? `Bearer ${TOKEN}` : `token ${TOKEN}`))).toBe(true);
    });
  }

  it('against a stand-in for the GitHub API: finds its comment on a later page of the list', async () => {
    standin = await forgeStandin('github', TOKEN, REPO, PR);
    const marker = planMarker('nas');
    for (let i = 0; i < 250; i++) standin.comments.push({ id: 10 + i, body: `comment ${i}`, html_url: 'z' });
    standin.comments.push({ id: 5000, body: `${marker}\nold plan`, html_url: 'w' });
    const posted = await postComment(target('github', standin), marker, `${marker}\nnew plan`);
    expect(posted).toMatchObject({ action: 'updated', id: 5000 });
    expect(standin.requests.filter((r) => r.method === 'GET').map((r) => r.path)).toEqual([
      `/repos/${REPO}/issues/${PR}/comments?per_page=100`,
      `/repos/${REPO}/issues/${PR}/comments?per_page=100&page=2`,
      `/repos/${REPO}/issues/${PR}/comments?per_page=100&page=3`,
    ]);
  });

  it('against a stand-in for the GitHub API: a refused token fails with the status and what to fix', async () => {
    standin = await forgeStandin('github', TOKEN, REPO, PR);
    standin.failWith = 403;
    const err = await postComment(target('github', standin), planMarker('nas'), 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/^failed to list the pull request's comments: GET http:\/\/127\.0\.0\.1:\d+\/repos\/alice\/nas-config\/issues\/7\/comments\?per_page=100 answered HTTP 403 \(Resource not accessible by integration\); the token may not comment here/);
    expect((err as Error).message).toContain('pull-requests: write');
    expect((err as Error).message).not.toContain(TOKEN);
  });

  it('against a stand-in for the Gitea API: a forge that is down is worth retrying, and nothing is posted', async () => {
    standin = await forgeStandin('gitea', TOKEN, REPO, PR);
    standin.failWith = 502;
    await expect(postComment(target('gitea', standin), planMarker('nas'), 'x')).rejects.toBeInstanceOf(TransientError);
    const port = await freePort();
    const err = await postComment({ ...target('gitea', standin), apiUrl: `http://127.0.0.1:${port}/api/v1` }, planMarker('nas'), 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransientError);
    expect((err as Error).message).toMatch(/^failed to list the pull request's comments at http:\/\/127\.0\.0\.1:\d+\/api\/v1\/repos\/.*: .*ECONNREFUSED.*; nothing was posted/);
  });
});

describe('where the plan comment goes, from the workflow\'s environment', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ramboot-comment-env-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const event = join(dir, 'event.json');
  writeFileSync(event, JSON.stringify({ action: 'synchronize', pull_request: { number: 42 } }));

  it('takes GitHub Actions\' variables: the API, the repository, the pull request from the event, the token', () => {
    const env = { GITHUB_TOKEN: 'gh-token', GITHUB_API_URL: 'https://api.github.com', GITHUB_REPOSITORY: 'alice/nas', GITHUB_EVENT_PATH: event };
    expect(commentTarget({ forge: 'github' }, env)).toEqual({ forge: 'github', apiUrl: 'https://api.github.com', repository: 'alice/nas', pr: 42, token: 'gh-token' });
  });

  it('takes Gitea and Forgejo Actions\' server address for the API, and the pull request from the ref', () => {
    const env = { RAMBOOT_FORGE_TOKEN: 'ramboot-token', GITHUB_TOKEN: 'other', GITHUB_SERVER_URL: 'https://git.example.org/', GITHUB_REPOSITORY: 'alice/nas', GITHUB_REF: 'refs/pull/9/head' };
    expect(commentTarget({ forge: 'forgejo' }, env)).toEqual({ forge: 'forgejo', apiUrl: 'https://git.example.org/api/v1', repository: 'alice/nas', pr: 9, token: 'ramboot-token' });
  });

  it('says which variable to set when there is no token, and which option when there is no pull request', () => {
    expect(() => commentTarget({ forge: 'github' }, {})).toThrow(/no token; set RAMBOOT_FORGE_TOKEN \(or GITHUB_TOKEN, GITEA_TOKEN, FORGEJO_TOKEN\)/);
    expect(() => commentTarget({ forge: 'github', repository: 'a/b' }, { GITHUB_TOKEN: 't' })).toThrow(/the pull request is unknown; pass --pr N/);
    expect(() => commentTarget({ forge: 'github', repository: 'not-a-repo', pr: 1 }, { GITHUB_TOKEN: 't' })).toThrow(/"not-a-repo", not OWNER\/NAME/);
  });
});
