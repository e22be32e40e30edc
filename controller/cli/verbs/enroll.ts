import { execa } from 'execa';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { CONFIG_FILE, MACHINES_DIR } from '../../../lib/config.js';
import { RambootError, UsageError } from '../../../lib/errors.js';
import { packagePath } from '../../../lib/package.js';
import { connect } from '../../../deploy/ssh.js';
import { SEALED_TOOLS } from '../../../image/agent.js';
import { parseSealOutput, renderRecipient, TPM_DIR, TPM_KEY_PRIV, TPM_KEY_PUB, TPM_RECIPIENT } from '../../../secrets/sealed.js';
import { machineTarget, type MachineOptions } from './deploy.js';

// `ramboot secrets enroll`: seal a new key to the running machine's TPM and record its
// recipient in the repository (secrets.at_rest: tpm; secrets/sealed.ts). The key is made
// and sealed on the machine, in RAM (image/agent/ramboot-sealed, sent over SSH): only its
// public recipient and the TPM-wrapped object come back. Enrolling again (a new board, a
// cleared TPM) replaces both; the next build encrypts to the new key only.

const SEAL_TIMEOUT_MS = 120_000;

export async function enrollCommand(o: MachineOptions & { stdout: NodeJS.WritableStream }): Promise<number> {
  const { machine, target } = await machineTarget(o);
  const repo = machine.repo;
  if (!existsSync(join(repo, CONFIG_FILE))) {
    throw new UsageError(`failed to enroll ${target.name}: ${repo} is not a working tree with ${CONFIG_FILE}; run enroll in a clone of the machine's repository`, {
      step: 'enroll',
      input: repo,
    });
  }
  const session = await connect(target);
  let stdout: string;
  try {
    const probe = await session.exec(
      // What the image needs to unseal at boot is what enrolling needs too (and base64).
      `missing=; for c in ${[...SEALED_TOOLS, 'base64'].join(' ')}; do command -v $c >/dev/null || missing="$missing $c"; done; ` +
        'echo "missing:$missing"; [ -e /dev/tpmrm0 ] && echo tpm: yes || echo tpm: no',
    );
    if (/^tpm: no/m.test(probe.stdout)) {
      throw new UsageError(`failed to enroll ${target.name}: the machine has no TPM 2.0 (/dev/tpmrm0 is missing; is it enabled in the firmware? On the virtual NAS: ramboot vm --tpm)`, {
        step: 'enroll',
        host: target.name,
      });
    }
    const missing = /^missing:(.*)$/m.exec(probe.stdout)?.[1]?.trim();
    if (missing) {
      throw new UsageError(
        `failed to enroll ${target.name}: the running image lacks ${missing.split(/\s+/).join(', ')}; add tpm2-tools, age and cpio to packages (Alpine: tpm2-tools age openssh-keygen), deploy that, then enroll`,
        { step: 'enroll', host: target.name },
      );
    }
    stdout = await session.check('seal a key to the TPM', 'sh -s seal', { stdin: readFileSync(packagePath('image/agent/ramboot-sealed')), timeoutMs: SEAL_TIMEOUT_MS });
  } finally {
    session.close();
  }
  const enrollment = parseSealOutput(stdout, target.name);
  // A machine of a repository of several: its own tpm/ and its own ramboot.yaml, in machines/NAME/ (they override the top level's).
  const at = (path: string) => (machine.machine ? `${MACHINES_DIR}/${machine.machine}/${path}` : path);
  mkdirSync(join(repo, at(TPM_DIR)), { recursive: true });
  writeFileSync(join(repo, at(TPM_RECIPIENT)), renderRecipient(enrollment.recipient, machine.config.host.name, new Date().toISOString().slice(0, 10)));
  writeFileSync(join(repo, at(TPM_KEY_PUB)), enrollment.pub);
  writeFileSync(join(repo, at(TPM_KEY_PRIV)), enrollment.priv);
  const configFile = join(repo, at(CONFIG_FILE));
  const doc = parseDocument(existsSync(configFile) ? readFileSync(configFile, 'utf8') : '');
  doc.setIn(['secrets', 'at_rest'], 'tpm');
  writeFileSync(configFile, doc.toString());
  const paths = [TPM_RECIPIENT, TPM_KEY_PUB, TPM_KEY_PRIV, CONFIG_FILE].map(at);
  // The git CLI, so that the user's own settings hold: a commit signed as watch.signers asks.
  const message = `Seal the secrets to ${machine.config.host.name}'s TPM\n\nramboot secrets enroll: builds encrypt the secrets to ${enrollment.recipient}\n(the key sealed to the machine's TPM) and to secrets.recipients.\n`;
  const add = await execa('git', ['add', '--', ...paths], { cwd: repo, reject: false });
  const commit = add.exitCode === 0 ? await execa('git', ['commit', '-q', '-m', message, '--', ...paths], { cwd: repo, reject: false }) : add;
  if (commit.exitCode !== 0) {
    throw new RambootError(
      `enrolled ${target.name}, but failed to commit ${paths.join(', ')} in ${repo}: ${String(commit.stderr).trim()}; the files are written: commit them yourself`,
      { step: 'enroll', host: target.name, input: repo },
    );
  }
  const head = (await execa('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo })).stdout.trim();
  o.stdout.write(
    `enrolled ${target.name}: its secrets are sealed to ${enrollment.recipient} (a key only its TPM can unseal)\n` +
      `  committed ${head}: ${paths.join(', ')} (secrets.at_rest: tpm)\n` +
      '  push it: the next build encrypts the secrets to the machine and to secrets.recipients\n',
  );
  return 0;
}
