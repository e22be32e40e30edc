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

/** Why a deploy ended as it did: the machine-readable half of a verdict. */
export const REASON = {
  HEALTHY: 'Healthy',
  ALREADY_RUNNING: 'AlreadyRunning',
  BUILD_FAILED: 'BuildFailed',
  HOST_KEY_MISMATCH: 'HostKeyMismatch',
  CONNECT_FAILED: 'ConnectFailed',
  PREFLIGHT_FAILED: 'PreflightFailed',
  UPLOAD_FAILED: 'UploadFailed',
  ARM_FAILED: 'ArmFailed',
  REBOOT_FAILED: 'RebootFailed',
  SUPERSEDED: 'Superseded',
  TRIAL_UNREACHABLE: 'TrialUnreachable',
  TRIAL_BOOTED_LTS: 'TrialBootedLts',
  WRONG_BUILD: 'WrongBuild',
  CHECK_FAILED: 'CheckFailed',
  LEFT_TRIAL: 'LeftTrial',
  CONFIRM_FAILED: 'ConfirmFailed',
  MEDIUM_DAMAGED: 'MediumDamaged',
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
