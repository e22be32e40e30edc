import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFile } from '../lib/private-file.js';

// Commits the controller will not deploy again by itself: a build that failed, a trial
// that was rolled back, a commit that is not trusted. The next new commit is deployed
// as usual; `ramboot release COMMIT` lifts the quarantine of one.

export interface Quarantined {
  commit: string;
  /** For a refresh that was rolled back: only that build is refused, not the commit. */
  buildId?: string;
  outcome: string;
  message: string;
  at: string;
  /** The history record of the reconcile that quarantined it. */
  reconcile: string;
}

export class Quarantine {
  private readonly file: string;
  private items: Quarantined[];

  constructor(stateDir: string) {
    this.file = join(stateDir, 'quarantine.json');
    this.items = existsSync(this.file) ? (JSON.parse(readFileSync(this.file, 'utf8')) as Quarantined[]) : [];
  }

  list(): Quarantined[] {
    return [...this.items];
  }

  /** Whether a commit (or, for a refresh, this build of it) is refused. */
  holds(commit: string, buildId?: string): Quarantined | undefined {
    return this.items.find((q) => q.commit === commit && (q.buildId === undefined || q.buildId === buildId));
  }

  add(q: Quarantined): void {
    this.items = [...this.items.filter((i) => !(i.commit === q.commit && i.buildId === q.buildId)), q];
    this.write();
  }

  /** Lifts the quarantine of every entry of a commit (a full id or a prefix of 7+ characters); returns what was lifted. */
  release(commit: string): Quarantined[] {
    const lifted = this.items.filter((q) => matches(q.commit, commit));
    this.items = this.items.filter((q) => !matches(q.commit, commit));
    this.write();
    return lifted;
  }

  private write(): void {
    writePrivateFile(this.file, `${JSON.stringify(this.items, null, 2)}\n`);
  }
}

function matches(commit: string, given: string): boolean {
  return given.length >= 7 && commit.startsWith(given.toLowerCase());
}
