// One reconcile at a time, for every trigger (a ref that moved, a poll, a webhook, a
// push, `ramboot reconcile`, the refresh schedule): one running, one pending slot that
// holds the newest request. A request that replaces a pending one supersedes it, and
// that is recorded; node-cron's noOverlap covers neither execute() nor other triggers,
// so the queue is ramboot's own.

export type TriggerKind = 'start' | 'ref' | 'poll' | 'webhook' | 'push' | 'manual' | 'refresh' | 'release' | 'retry';

export interface Trigger {
  kind: TriggerKind;
  /** What set it off: "webhook github", "pushed by git receive-pack"… */
  detail?: string;
}

export interface Request {
  commit: string;
  trigger: Trigger;
  /** When the trigger noticed it (ISO time). */
  at: string;
  /** Rebuild with fresh packages even if this commit's build exists (watch.refresh). */
  refresh?: boolean;
  /** Deploy even a quarantined commit (`ramboot release`). */
  force?: boolean;
}

export type Submitted = 'started' | 'pending' | 'duplicate';

export class Queue {
  private current?: Request;
  private next?: Request;
  private idle: Promise<void> = Promise.resolve();

  constructor(
    /** Runs one request; it records its own outcome, and an error it throws is a bug reported to onCrash. */
    private readonly work: (r: Request) => Promise<void>,
    private readonly onSuperseded: (replaced: Request, by: Request) => void,
    private readonly onCrash: (r: Request, err: unknown) => void,
  ) {}

  get running(): Request | undefined {
    return this.current;
  }

  get pending(): Request | undefined {
    return this.next;
  }

  /** Queues a request; the newest pending one wins. */
  submit(r: Request): Submitted {
    const same = (a?: Request) => a && a.commit === r.commit && !!a.refresh === !!r.refresh && !r.force;
    if (same(this.current) && !this.next) return 'duplicate';
    if (same(this.next)) return 'duplicate';
    if (!this.current) {
      this.start(r);
      return 'started';
    }
    if (this.next) this.onSuperseded(this.next, r);
    this.next = r;
    return 'pending';
  }

  /** Resolves when nothing runs and nothing is pending. */
  drained(): Promise<void> {
    return this.idle;
  }

  private start(r: Request): void {
    this.current = r;
    this.idle = (async () => {
      let req: Request | undefined = r;
      while (req) {
        this.current = req;
        try {
          await this.work(req);
        } catch (err) {
          this.onCrash(req, err);
        }
        req = this.next;
        this.next = undefined;
        this.current = undefined;
      }
    })();
  }
}
