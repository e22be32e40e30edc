import { createHmac } from 'node:crypto';
import type { NotifyConfig } from '../../lib/config-schema.js';
import { RAMBOOT_VERSION } from '../../lib/package.js';
import { GENERIC_SIGNATURE } from '../push-webhook.js';
import type { Notice } from './notice.js';
import { jsonHeaders, originOf, secretRef, type Target } from './target.js';

// A generic webhook: the notice as JSON, POSTed to one URL. With a secret, the body is
// signed as ramboot's own webhook receiver expects it (X-Ramboot-Signature: sha256=<hex
// HMAC-SHA256 of the raw body>); X-Ramboot-Delivery stays the same across retries so a
// receiver can tell a retry from a new event.

/** The JSON body: every field of the notice, named for a reader who never saw ramboot's code. */
function webhookBody(n: Notice): string {
  return JSON.stringify({
    event: `deploy.${n.event}`,
    machine: n.machine,
    context: n.context,
    reconcile: n.reconcile,
    commit: n.commit,
    subject: n.subject,
    author: n.author,
    trigger: n.trigger,
    outcome: n.outcome,
    reason: n.reason,
    message: n.message,
    state: n.state,
    description: n.description,
    url: n.link,
    at: n.at,
    controller: { version: RAMBOOT_VERSION },
  });
}

function sign(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export function webhookTarget(c: NonNullable<NotifyConfig['webhook']>): Target {
  return {
    kind: 'webhook',
    // The path of a webhook URL is often its secret (Slack, Discord, Home Assistant).
    where: `${originOf(c.url)}/…`,
    secret: secretRef(c.secret_file, c.secret_env),
    status: false,
    request: (n, secret) => {
      const body = webhookBody(n);
      return {
        url: c.url,
        headers: jsonHeaders({ 'x-ramboot-event': `deploy.${n.event}`, 'x-ramboot-delivery': n.id, ...(secret ? { [GENERIC_SIGNATURE]: sign(body, secret) } : {}) }),
        body,
      };
    },
  };
}
