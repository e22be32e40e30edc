import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writePrivateFile } from '../lib/private-file.js';

// controller.json in the machine's state directory: what the controller keeps between
// runs besides the journal, the history and the quarantine. Its trust settings (signers,
// branch) are written only from how the controller was started or from a commit that
// passed the policy in force; the pre-receive hook reads them too.

export interface Persisted {
  paused: boolean;
  /** The allowed-signers file in force (watch.signers of the last trusted commit, or --signers); only a person turns it off. */
  signers?: string;
  /** The branch followed: --branch, or watch.branch of the last trusted commit. */
  branch?: string;
  /** A repository of several machines: the last commit promoted on one of them (it passed the policy), where a restart starts from. */
  promoted?: string;
  lastPoll?: { at: string; ok: boolean; commit?: string; error?: string };
  lastWebhook?: { at: string; form?: string; status: number; result: string };
  lastScrub?: { at: string; ok: boolean; repaired: string[]; damaged: string[]; error?: string };
}

export const PERSISTED_FILE = 'controller.json';

export function loadPersisted(stateDir: string): Persisted {
  const file = join(stateDir, PERSISTED_FILE);
  return existsSync(file) ? { paused: false, ...(JSON.parse(readFileSync(file, 'utf8')) as Partial<Persisted>) } : { paused: false };
}

/** Written whole, 0600, through a renamed temporary file: a crash leaves the old or the new one. */
export function savePersisted(stateDir: string, p: Persisted): void {
  writePrivateFile(join(stateDir, PERSISTED_FILE), `${JSON.stringify(p, null, 2)}\n`);
}
