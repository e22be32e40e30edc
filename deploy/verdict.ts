// How a deploy ended (docs/ARCHITECTURE.md, "Deploy"). Each verdict has its own exit code; the journal,
// the status page and the CLI all use these names.

export const VERDICT = {
  /** The candidate passed its trial and is the default (`lts`). */
  PROMOTED: 'promoted',
  /** No image was built; the machine was not contacted. */
  BUILD_FAILED: 'build-failed',
  /** The trial never began: what the machine runs and boots by default did not change. */
  UPLOAD_FAILED: 'upload-failed',
  /** The trial boot answered but failed a check; the controller rebooted it into `lts`. */
  NOT_HEALTHY: 'trial-not-healthy',
  /** The trial boot never answered (or was not confirmed in time); the agent, a panic or a power cycle brought back `lts`. */
  UNREACHABLE: 'trial-unreachable',
  /** A file a label would name is damaged on the medium and the controller has no copy: nothing was written. */
  MEDIUM_DAMAGED: 'medium-damaged',
} as const;

export type Verdict = (typeof VERDICT)[keyof typeof VERDICT];

export const VERDICT_EXIT_CODE: Record<Verdict, number> = {
  promoted: 0,
  'build-failed': 10,
  'upload-failed': 11,
  'trial-not-healthy': 12,
  'trial-unreachable': 13,
  'medium-damaged': 14,
};

/** The deploy stopped on an error and is still open in the journal; running deploy again resumes it. */
export const EXIT_INCOMPLETE = 20;
export const EXIT_USAGE = 2;

export const VERDICT_TEXT: Record<Verdict, string> = {
  promoted: 'promoted',
  'build-failed': 'build failed',
  'upload-failed': 'upload failed (nothing changed on the machine)',
  'trial-not-healthy': 'trial not healthy (rolled back)',
  'trial-unreachable': 'trial unreachable (rolled back)',
  'medium-damaged': 'medium damaged (no label changed)',
};

/**
 * Why a reconcile or a deploy ended as it did: the machine-readable half of a verdict,
 * in the deploy journal, the controller's history records, the page, the API and the
 * notifications. Deploy's reasons first, then those the controller adds around a deploy.
 * The values are kept on disk (journal, history): never change one.
 */
export const REASON = {
  /** The trial boot passed every health check and was confirmed: the candidate is `lts`. Nothing to do. */
  HEALTHY: 'Healthy',
  /** The machine already runs the candidate as its default; nothing was written. Nothing to do. */
  ALREADY_RUNNING: 'AlreadyRunning',
  /** The commit did not build; the machine was not contacted. Read the message and the log, fix the commit, push. */
  BUILD_FAILED: 'BuildFailed',
  /** The machine presented another SSH host key than the image pins; nothing was sent. Check it is the right machine, or its host key secret. */
  HOST_KEY_MISMATCH: 'HostKeyMismatch',
  /** The machine's TPM could not unseal its secrets (secrets.at_rest: tpm): it runs a recovery boot; nothing was sent. Re-enroll it (`ramboot secrets enroll`), as the message says. */
  SEALED_SECRETS_UNAVAILABLE: 'SealedSecretsUnavailable',
  /** The machine did not answer over SSH before the trial; nothing changed. The controller tries again; check the network if it persists. */
  CONNECT_FAILED: 'ConnectFailed',
  /** The boot medium or the machine failed the checks before anything was written (read-only, full, wrong firmware, …). Fix what the message names. */
  PREFLIGHT_FAILED: 'PreflightFailed',
  /** Writing the image to the medium failed; the default did not change. Read the message; deploy again once fixed. */
  UPLOAD_FAILED: 'UploadFailed',
  /** The boot-once entry could not be set; the default did not change. Check the boot loader on the medium (`ramboot bootloader install`). */
  ARM_FAILED: 'ArmFailed',
  /** The machine refused the reboot or did not reboot in time; the trial was disarmed. Look at the machine, then deploy again. */
  REBOOT_FAILED: 'RebootFailed',
  /** A newer commit (controller) or build (an interrupted deploy in the journal) took its place before its trial began. Nothing to do. */
  SUPERSEDED: 'Superseded',
  /** The trial boot never answered; the agent, the watchdog or a power cycle brought back `lts`. Read the machine's console for why it did not come up. */
  TRIAL_UNREACHABLE: 'TrialUnreachable',
  /** The machine came back on `lts`: the trial boot failed before it answered. Read the machine's console for why it did not come up. */
  TRIAL_BOOTED_LTS: 'TrialBootedLts',
  /** Slot `new` booted another build than the candidate; rolled back. Check the medium's boot entries and what else writes them. */
  WRONG_BUILD: 'WrongBuild',
  /** A health check failed on the trial boot; rolled back. Fix what the check's output shows, push a new commit. */
  CHECK_FAILED: 'CheckFailed',
  /** The machine left the trial boot (it rebooted, lost power) before it was confirmed; back on `lts`. Check the agent's timeout and the machine's power. */
  LEFT_TRIAL: 'LeftTrial',
  /** The trial agent refused the confirmation; back on `lts`. Read its output in the record. */
  CONFIRM_FAILED: 'ConfirmFailed',
  /** A file a slot would name is damaged and the controller has no copy; no slot changed. Replace or reformat the medium, then deploy again. */
  MEDIUM_DAMAGED: 'MediumDamaged',
  /** The commit is not signed by a key of the allowed-signers file; nothing was built. Sign it with an allowed key and push it again. */
  UNTRUSTED_COMMIT: 'UntrustedCommit',
  /** The signature could not be checked (the allowed-signers file is unreadable or invalid); nothing was built. Fix the file the message names. */
  SIGNATURE_POLICY: 'SignaturePolicy',
  /** With signing, the commit does not descend from the running build (a rewritten or moved-back branch); nothing was built. `ramboot release` it if that is meant. */
  NOT_DESCENDANT: 'NotDescendant',
  /** A refresh (`watch.refresh`) rebuilt a build that was rolled back before; the running build stays. Nothing to do until a new commit. */
  REFRESH_QUARANTINED: 'RefreshQuarantined',
  /** The deploy refused to start (a rolled-back build not forced, an invalid setting); nothing changed. Do what the message says. */
  REFUSED: 'Refused',
  /** Something was unreachable before anything changed (a mirror, the machine, the deploy lock); the controller tries again with backoff. Nothing to do unless it persists. */
  RETRY_LATER: 'RetryLater',
  /** The controller stopped before the verdict; its next start resumes the deploy from the journal. Nothing to do. */
  INTERRUPTED: 'Interrupted',
  /** In a repository of several machines, the commit changed only other machines' files: this one's build has the inputs of the build it runs, and nothing was deployed. Nothing to do. */
  NO_CHANGE: 'NoChange',
  /** The commit failed on another machine of the repository first (the canary): this one was not touched. Fix the commit, or `ramboot release` it. */
  ROLLOUT_STOPPED: 'RolloutStopped',
} as const;

export type Reason = (typeof REASON)[keyof typeof REASON];

export interface Outcome {
  verdict: Verdict;
  reason: Reason;
  /** One line for a human. */
  message: string;
  /** The failed health check's name and output. */
  check?: string;
  output?: string;
}

export function verdictLine(o: Outcome): string {
  return `${VERDICT_TEXT[o.verdict]}: ${o.message}`;
}
