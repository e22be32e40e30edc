import { gitSource } from '../../builder/source.js';
import type { Config, NotifyConfig } from '../../lib/config-schema.js';
import { describe } from '../../lib/errors.js';
import type { Emit, WarnEvent } from '../../lib/events.js';
import type { Controller, Envelope } from '../controller.js';
import { OUTCOME } from '../history.js';
import { configOf } from '../open-machine.js';
import { Dispatcher, type Attempted, type DeliveryState, type RetryPolicy } from './dispatch.js';
import { giteaTarget } from './gitea.js';
import { githubTarget } from './github.js';
import { gitlabTarget } from './gitlab.js';
import { startedNotice, verdictNotice } from './notice.js';
import { ntfyTarget } from './ntfy.js';
import type { Target } from './target.js';
import { webhookTarget } from './webhook.js';

// Notifications as a subscriber of the controller's events: a reconcile's build phase is
// "deploy started" (after the signature check, when there is one), its `reconciled`
// event is the verdict. Each is handled after the event, in order, off the reconcile's
// path: a slow or failing target never holds a deploy.
//
// Where they go is the notify section of ramboot.yaml: of the commit being reconciled
// once it is trusted (it passed the signature policy, when there is one) and its
// ramboot.yaml is valid; otherwise of the commit the machine runs. A build that failed
// on its own ramboot.yaml is so still reported, through the last good configuration.

export type NotifySource = Pick<Controller, 'subscribe' | 'history' | 'running'>;

export interface NotifierOptions {
  /** The repository's git directory, to read a commit's ramboot.yaml. */
  gitdir: string;
  retry?: RetryPolicy;
  /** Each delivery's end (the metrics count them). */
  onDelivery?: (target: Target, a: Attempted) => void;
  /** Where a failed delivery is reported as a warning (the controller's log). */
  emit?: Emit<WarnEvent>;
  /** The machine, in a repository of several: its ramboot.yaml (over the repository's) says where its notices go. */
  machine?: string;
}

export interface NotifyState {
  targets: DeliveryState[];
  /** Which commit's ramboot.yaml said where notifications go, last time; and why not the reconciled one's. */
  config?: { commit: string; note?: string };
  /** A notice that could not be made at all (no configuration could be read). */
  problem?: string;
}

function targetsOf(notify: NotifyConfig): Target[] {
  const t: Target[] = [];
  if (notify.github) t.push(githubTarget(notify.github));
  if (notify.gitea) t.push(giteaTarget('gitea', notify.gitea));
  if (notify.forgejo) t.push(giteaTarget('forgejo', notify.forgejo));
  if (notify.gitlab) t.push(gitlabTarget(notify.gitlab));
  if (notify.webhook) t.push(webhookTarget(notify.webhook));
  if (notify.ntfy) t.push(ntfyTarget(notify.ntfy));
  return t;
}

export class Notifier {
  private readonly dispatcher: Dispatcher;
  private chain: Promise<void> = Promise.resolve();
  private used?: NotifyState['config'];
  private problem?: string;

  constructor(private readonly o: NotifierOptions) {
    this.dispatcher = new Dispatcher(o.retry, (t, a) => {
      o.onDelivery?.(t, a);
      if (a.result === 'failed') o.emit?.({ kind: 'warn', source: 'controller', message: `notification to ${t.kind} (${t.where}) failed after ${a.attempts} attempt(s): ${a.error}` });
    });
  }

  /** Starts listening; returns the function that stops it. */
  attach(ctrl: NotifySource): () => void {
    return ctrl.subscribe((e) => {
      if (!(e.event.kind === 'phase' && e.event.phase === 'build') && e.event.kind !== 'reconciled') return;
      this.chain = this.chain.then(() => this.handle(ctrl, e)).catch((err) => void (this.problem = describe(err)));
    });
  }

  state(): NotifyState {
    return { targets: this.dispatcher.state(), config: this.used, problem: this.problem };
  }

  /** Resolves once every event seen so far is delivered or given up (tests, a clean stop). */
  async idle(): Promise<void> {
    await this.chain;
    await this.dispatcher.idle();
  }

  /** idle(), for at most `ms`: a stopping controller lets the last notices go out, but a target that does not answer does not hold it. */
  async settle(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  private async handle(ctrl: NotifySource, e: Envelope): Promise<void> {
    const ev = e.event;
    if (ev.kind !== 'phase' && ev.kind !== 'reconciled') return;
    const record = ctrl.history.get(ev.reconcile);
    if (!record) return;
    // While the machine stays unreachable, each retry would say the same again.
    if (record.trigger.kind === 'retry' && (ev.kind === 'phase' || ev.outcome === OUTCOME.RETRY)) return;
    const trusted = ev.kind === 'phase' || record.phases.some((p) => p.name === 'build');
    const config = await this.configFor(trusted ? record.commit : undefined, ctrl);
    if (!config) return;
    // A machine of several has its page under /machines/NAME on the controller's.
    const pageUrl = config.notify.url && this.o.machine ? `${config.notify.url.replace(/\/+$/, '')}/machines/${this.o.machine}` : config.notify.url;
    const ctx = { machine: config.host.name, pageUrl };
    const notice = ev.kind === 'phase' ? startedNotice(record, ctx) : verdictNotice(record, ev.outcome, ev.message, ctx);
    for (const t of targetsOf(config.notify)) this.dispatcher.send(t, notice);
  }

  private async configFor(commit: string | undefined, ctrl: NotifySource): Promise<Config | undefined> {
    let note = commit ? undefined : 'the reconciled commit is not trusted';
    if (commit) {
      try {
        const config = await configOf(await gitSource(this.o.gitdir, commit), this.o.machine);
        this.used = { commit };
        this.problem = undefined;
        return config;
      } catch (err) {
        note = `the reconciled commit's ramboot.yaml could not be read: ${describe(err)}`;
      }
    }
    const running = ctrl.running()?.commit;
    if (!running) {
      this.problem = `no notification sent: ${note}, and no commit runs on the machine yet`;
      return undefined;
    }
    try {
      const config = await configOf(await gitSource(this.o.gitdir, running), this.o.machine);
      this.used = { commit: running, note: `${note}; the running commit's was used` };
      this.problem = undefined;
      return config;
    } catch (err) {
      this.problem = `no notification sent: ${note}, and the running commit's could not be read either: ${describe(err)}`;
      return undefined;
    }
  }
}
