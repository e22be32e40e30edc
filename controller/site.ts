import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deploy } from '../deploy/deploy.js';
import { Journal, acquireLock } from '../deploy/journal.js';
import { targetFor, type LocalSettings } from '../deploy/target.js';
import { VERDICT, REASON } from '../deploy/verdict.js';
import type { Pulled } from '../image/oci.js';
import { backoffMs } from '../lib/backoff.js';
import { RambootError, describe } from '../lib/errors.js';
import { writePrivateFile } from '../lib/private-file.js';
import { runningBuild, type AnyEvent } from './controller.js';
import { RETRY_BACKOFF } from './follower.js';
import type { MachineState } from './state.js';

// A site controller (`ramboot up --registry REF`): it follows a registry tag instead of a
// branch and never builds. Each poll asks the registry for the digest the tag names (a
// HEAD request); a new one is pulled (only the blobs no image here has, every digest
// checked) and deployed through the trial as a built image is. Each digest is tried once:
// a refused pull or a failed trial waits for the next publish, as a quarantined commit
// waits for the next commit; a machine or registry unreachable now is tried again later,
// with backoff. Who may move the tag is the registry's to say (image/oci.ts), so nothing
// the image says runs on this host: its trial.power_cycle is not used.

export interface SiteOptions {
  state: MachineState;
  /** The manifest digest the tag names now; undefined when the registry does not say (the site then pulls). */
  look: () => Promise<string | undefined>;
  /** Pulls what the tag names into the state's images, verified. */
  pull: () => Promise<Pulled>;
  reach: () => LocalSettings;
  emit: (e: AnyEvent) => void;
}

/** site.json: the last digest this site finished with, and how. */
export interface SiteRecord {
  digest: string;
  buildId?: string;
  commit?: string;
  outcome: string;
  message: string;
  at: string;
}

const SITE_FILE = 'site.json';

export function lastSiteRecord(stateDir: string): SiteRecord | undefined {
  const file = join(stateDir, SITE_FILE);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as SiteRecord) : undefined;
}

export class Site {
  private busy?: Promise<void>;
  private stopping = false;
  /** Polls that ended with "try again later" in a row, and the time before which a poll does nothing. */
  private faults = 0;
  private quietUntil = 0;

  constructor(private readonly o: SiteOptions) {}

  /** One look at the tag, and a deploy when it names something new; polls never overlap, and a fault backs them off. */
  poll(): Promise<void> {
    if (this.stopping || Date.now() < this.quietUntil) return Promise.resolve();
    this.busy ??= this.once()
      .catch((err: unknown): 'later' => {
        this.o.emit({ kind: 'warn', source: 'controller', message: `the site controller's poll failed: ${describe(err)}` });
        return 'later';
      })
      .then((end) => {
        this.faults = end === 'later' ? this.faults + 1 : 0;
        if (end === 'later') this.quietUntil = Date.now() + backoffMs(this.faults, RETRY_BACKOFF);
      })
      .finally(() => (this.busy = undefined));
    return this.busy;
  }

  /** No new poll starts; a deploy in flight is left to its journal (the next start resumes it). */
  stop(): void {
    this.stopping = true;
  }

  private async once(): Promise<'done' | 'later'> {
    const warn = (message: string) => this.o.emit({ kind: 'warn', source: 'registry', message });
    const last = lastSiteRecord(this.o.state.dir);
    let digest: string | undefined;
    try {
      digest = await this.o.look();
    } catch (err) {
      warn(`${describe(err)}; looking again later`);
      return 'later';
    }
    const journal = await Journal.open(this.o.state.dir);
    const open = journal.open();
    if (digest && digest === last?.digest && !open) return 'done';
    let pulled: Pulled;
    try {
      pulled = await this.o.pull();
    } catch (err) {
      if (err instanceof RambootError && err.kind === 'retry') {
        warn(`${describe(err)}; pulling again later`);
        return 'later';
      }
      // A pull that fails a check (a digest, a seal) waits for the next publish: nothing was written or deployed.
      const message = `${describe(err)}; nothing was deployed, the machine keeps its build`;
      if (digest) this.save({ digest, outcome: 'refused', message, at: new Date().toISOString() });
      else warn(message);
      return 'done';
    }
    // A registry that does not say the digest before the pull: the pull says it.
    if (pulled.digest === last?.digest && !open) return 'done';
    const m = pulled.manifest;
    const record = { digest: pulled.digest, buildId: m.buildId, commit: m.commit };
    if (runningBuild(this.o.state.dir)?.buildId === m.buildId && !open) {
      this.save({ ...record, outcome: VERDICT.PROMOTED, message: `already running build ${m.buildId}`, at: new Date().toISOString() });
      return 'done';
    }
    this.o.emit({ kind: 'stage', source: 'registry', message: `deploying build ${m.buildId} (commit ${m.commit?.slice(0, 12) ?? '?'})` });
    // trial.power_cycle is a command run on this host: one from the registry is not run (whoever may push to the tag would choose it).
    const settings = { ...m.settings, trial: { ...m.settings.trial, power_cycle: undefined } };
    const target = targetFor(settings, this.o.reach());
    let release: () => void;
    try {
      release = acquireLock(this.o.state.dir, target.name);
    } catch (err) {
      this.o.emit({ kind: 'warn', source: 'controller', message: `${describe(err)}; trying again later` });
      return 'later';
    }
    try {
      const result = await deploy({
        target,
        journal,
        imageDir: pulled.imageDir,
        manifest: { ...m, settings },
        previousHostKeys: [journal.lastPromotedHostKey()].filter((k): k is string => !!k),
        images: [this.o.state.images],
        onEvent: (e) => this.o.emit(e),
      });
      if (this.stopping) return 'done';
      const out = result.outcome;
      // Unreachable now (connect, preflight): the same digest is tried again later.
      if (out.verdict === VERDICT.UPLOAD_FAILED && (out.reason === REASON.CONNECT_FAILED || out.reason === REASON.PREFLIGHT_FAILED)) return 'later';
      this.save({ ...record, outcome: out.verdict, message: out.message, at: new Date().toISOString() });
      return 'done';
    } catch (err) {
      if (this.stopping) return 'done';
      // Refused (a person must act): this digest waits for the next publish. No verdict now: the journal keeps the deploy open, and a later poll resumes it.
      if (err instanceof RambootError && err.kind === 'person') {
        this.save({ ...record, outcome: VERDICT.UPLOAD_FAILED, message: describe(err), at: new Date().toISOString() });
        return 'done';
      }
      this.o.emit({ kind: 'warn', source: 'controller', message: `${describe(err)}; trying again later` });
      return 'later';
    } finally {
      release();
    }
  }

  private save(r: SiteRecord): void {
    writePrivateFile(join(this.o.state.dir, SITE_FILE), `${JSON.stringify(r, null, 2)}\n`);
    this.o.emit({ kind: 'stage', source: 'registry', message: `${r.digest.slice(0, 19)}: ${r.outcome}: ${r.message}` });
  }
}
