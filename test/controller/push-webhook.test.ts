import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { judgeWebhook } from '../../controller/push-webhook.js';

// Forge webhooks in the forms GitHub, Gitea, Forgejo and GitLab send them, and the
// generic signed form, judged as the controller's HTTP server judges them.

const SECRET = 'a shared webhook secret';
/** The commit a push delivery says the branch moved to: never what the controller acts on. */
const AFTER = 'f'.repeat(40);
const push = (ref = 'refs/heads/main') => Buffer.from(JSON.stringify({ ref, after: AFTER, commits: [] }));
const sign = (body: Buffer, secret = SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

describe('webhook signatures', () => {
  it.each([
    ['github', { 'x-github-event': 'push' }],
    ['gitea', { 'x-gitea-event': 'push' }],
    ['forgejo', { 'x-forgejo-event': 'push', 'x-gitea-event': 'push' }],
  ])('%s: an HMAC-SHA256 of the raw body in X-Hub-Signature-256 is accepted', (form, headers) => {
    const body = push();
    expect(judgeWebhook({ ...headers, 'x-hub-signature-256': sign(body) }, body, SECRET, 'main')).toMatchObject({ kind: 'accepted', status: 202, form });
  });

  it('an accepted push carries no commit: the payload\'s `after` is not passed on, the controller polls instead', () => {
    const body = push();
    expect(judgeWebhook({ 'x-github-event': 'push', 'x-hub-signature-256': sign(body) }, body, SECRET, 'main')).toEqual({ kind: 'accepted', status: 202, form: 'github', reason: 'polling the repository now' });
    expect(JSON.stringify(judgeWebhook({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET }, body, SECRET, 'main'))).not.toContain(AFTER);
  });

  it('refuses a signature made with another secret, or over another body', () => {
    const body = push();
    expect(judgeWebhook({ 'x-github-event': 'push', 'x-hub-signature-256': sign(body, 'wrong') }, body, SECRET, 'main')).toMatchObject({ kind: 'refused', status: 401 });
    expect(judgeWebhook({ 'x-github-event': 'push', 'x-hub-signature-256': sign(push('refs/heads/x')) }, body, SECRET, 'main')).toMatchObject({ kind: 'refused', status: 401 });
    expect(judgeWebhook({ 'x-github-event': 'push', 'x-hub-signature-256': 'sha1=abc' }, body, SECRET, 'main')).toMatchObject({ kind: 'refused' });
  });

  it('refuses a delivery with no signature at all', () => {
    expect(judgeWebhook({ 'content-type': 'application/json' }, push(), SECRET, 'main')).toMatchObject({ kind: 'refused', status: 401 });
  });

  it('gitlab: the token must equal the secret', () => {
    const body = push();
    expect(judgeWebhook({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET }, body, SECRET, 'main')).toMatchObject({ kind: 'accepted', form: 'gitlab' });
    expect(judgeWebhook({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': `${SECRET}x` }, body, SECRET, 'main')).toMatchObject({ kind: 'refused', status: 401 });
  });

  it('the generic form signs with X-Ramboot-Signature', () => {
    const body = Buffer.from('{}');
    expect(judgeWebhook({ 'x-ramboot-signature': sign(body) }, body, SECRET, 'main')).toMatchObject({ kind: 'accepted', form: 'generic' });
  });
});

describe('events that change nothing are answered 2xx with the reason (GitLab disables hooks that get 4xx)', () => {
  it('a ping', () => {
    const body = Buffer.from('{"zen":"hi"}');
    expect(judgeWebhook({ 'x-github-event': 'ping', 'x-hub-signature-256': sign(body) }, body, SECRET, 'main')).toMatchObject({ kind: 'ignored', status: 202, reason: expect.stringMatching(/ping/) });
  });

  it('a push to another branch', () => {
    const body = push('refs/heads/feature');
    const v = judgeWebhook({ 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET }, body, SECRET, 'main');
    expect(v).toMatchObject({ kind: 'ignored', status: 202 });
    expect(v.reason).toContain('refs/heads/feature');
  });

  it('another kind of event', () => {
    const body = Buffer.from('{}');
    expect(judgeWebhook({ 'x-gitea-event': 'issues', 'x-hub-signature-256': sign(body) }, body, SECRET, 'main')).toMatchObject({ kind: 'ignored', status: 202 });
  });
});
