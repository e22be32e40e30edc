import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

// Webhooks from forges are hints: a valid one makes the controller poll at once, and
// what it deploys is what the repository says, never the payload. Signatures are checked
// in constant time; an event that is merely ignored (a ping, another branch) is answered
// 2xx with the reason, because GitLab disables a hook that keeps getting 4xx.

export type WebhookForm = 'github' | 'gitea' | 'forgejo' | 'gitlab' | 'generic';

export type WebhookVerdict =
  | { kind: 'refused'; status: 401; form?: WebhookForm; reason: string }
  | { kind: 'ignored'; status: 202; form: WebhookForm; reason: string }
  | { kind: 'accepted'; status: 202; form: WebhookForm; reason: string };

/** The header a generic sender signs with: `sha256=<hex HMAC-SHA256 of the raw body>`. */
export const GENERIC_SIGNATURE = 'x-ramboot-signature';

type Headers = Record<string, string | string[] | undefined>;

function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Equal-length digests, so the comparison takes the same time whatever the input. */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function hmacMatches(signature: string | undefined, body: Buffer, secret: string): boolean {
  if (!signature?.startsWith('sha256=')) return false;
  const expected = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
  return sameSecret(signature.toLowerCase(), expected);
}

function formOf(h: Headers): WebhookForm | undefined {
  if (header(h, 'x-gitlab-token') !== undefined) return 'gitlab';
  if (header(h, 'x-forgejo-event') !== undefined) return 'forgejo';
  if (header(h, 'x-gitea-event') !== undefined) return 'gitea';
  if (header(h, 'x-github-event') !== undefined) return 'github';
  if (header(h, 'x-hub-signature-256') !== undefined) return 'github';
  if (header(h, GENERIC_SIGNATURE) !== undefined) return 'generic';
  return undefined;
}

function eventOf(h: Headers, form: WebhookForm): string {
  switch (form) {
    case 'gitlab':
      return header(h, 'x-gitlab-event') ?? '';
    case 'forgejo':
      return header(h, 'x-forgejo-event') ?? header(h, 'x-gitea-event') ?? '';
    case 'gitea':
      return header(h, 'x-gitea-event') ?? '';
    case 'github':
      return header(h, 'x-github-event') ?? 'push';
    case 'generic':
      return 'push';
  }
}

/** Decides what a delivery means for the branch the controller follows. */
export function judgeWebhook(headers: Headers, body: Buffer, secret: string, branch: string): WebhookVerdict {
  const form = formOf(headers);
  if (!form) return { kind: 'refused', status: 401, reason: 'no signature: expected X-Hub-Signature-256, X-Gitlab-Token or X-Ramboot-Signature' };
  const valid = form === 'gitlab' ? sameSecret(header(headers, 'x-gitlab-token') ?? '', secret) : hmacMatches(header(headers, form === 'generic' ? GENERIC_SIGNATURE : 'x-hub-signature-256'), body, secret);
  if (!valid) return { kind: 'refused', status: 401, form, reason: `bad ${form === 'gitlab' ? 'token' : 'signature'}` };
  const event = eventOf(headers, form).toLowerCase();
  if (event === 'ping') return { kind: 'ignored', status: 202, form, reason: 'ping: the hook works' };
  if (event !== 'push' && event !== 'push hook') return { kind: 'ignored', status: 202, form, reason: `${event} events do not change the branch` };
  let ref: string | undefined;
  try {
    ref = (JSON.parse(body.toString('utf8') || '{}') as { ref?: unknown }).ref as string | undefined;
  } catch {
    ref = undefined;
  }
  if (ref !== undefined && ref !== `refs/heads/${branch}`) return { kind: 'ignored', status: 202, form, reason: `a push to ${ref}; the controller follows refs/heads/${branch}` };
  return { kind: 'accepted', status: 202, form, reason: 'polling the repository now' };
}
