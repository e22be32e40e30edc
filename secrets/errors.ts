import { UsageError } from '../lib/errors.js';
import type { Identity } from './age.js';
import type { Recipient, StanzaSummary } from './keys.js';
import { describeRecipients, describeStanzas } from './recipients.js';

// Errors about one secret file. Each names the file and says what the user can do;
// none carries plaintext.

/** None of the controller's identities is among the file's recipients. */
export class WrongIdentityError extends UsageError {
  readonly file: string;
  readonly stanzas: StanzaSummary[];
  readonly tried: string[];

  constructor(file: string, stanzas: StanzaSummary[], configured: Recipient[], identities: Identity[]) {
    const tried = identities.map((i) => `${i.recipient} (from ${i.source})`);
    super(
      `failed to decrypt ${file}: it is encrypted to ${describeStanzas(stanzas, configured)}; ` +
        `ramboot.yaml lists ${describeRecipients(configured)}; ` +
        `tried ${tried.length > 0 ? tried.join(', ') : 'no identity'}. ` +
        'Use an identity the file is encrypted to, or re-encrypt it from a machine that can read it ' +
        '(ramboot secrets rekey) after adding this identity\'s public key to secrets.recipients.',
      { step: 'decrypt secret', input: file },
    );
    this.file = file;
    this.stanzas = stanzas;
    this.tried = tried;
  }
}

/** The file is not a complete, intact age file (truncated, edited, wrong format). */
export class CorruptSecretError extends UsageError {
  readonly file: string;

  constructor(file: string, problem: string, cause?: unknown) {
    super(`failed to decrypt ${file}: the file is damaged (${problem}); restore it from git history or add the secret again`, {
      step: 'decrypt secret',
      input: file,
    }, { cause });
    this.file = file;
  }
}

/** A secret whose path would land outside the image root, or is not a plain .age file. */
export class UnsafeSecretPathError extends UsageError {
  readonly path: string;

  constructor(path: string, problem: string) {
    super(`refusing secret ${JSON.stringify(path)}: ${problem}`, { step: 'read secrets', input: path });
    this.path = path;
  }
}

/** ramboot.yaml configures a secret that secrets/ does not contain. */
export class MissingSecretError extends UsageError {
  readonly path: string;
  readonly configKey: string;

  constructor(imagePath: string, repoPath: string) {
    const configKey = `secrets.files.${imagePath}`;
    super(
      `missing secret ${repoPath}: ramboot.yaml configures it (${configKey}) but the file does not exist; ` +
        `add it with \`ramboot secrets add ${imagePath}\` or remove the key`,
      { step: 'read secrets', input: repoPath },
    );
    this.path = repoPath;
    this.configKey = configKey;
  }
}
