import { join } from 'node:path';
import { CONFIG_FILE } from '../lib/config.js';
import type { Config } from '../lib/config-schema.js';
import { RambootError } from '../lib/errors.js';
import type { Identity } from './age.js';
import { passwordOf, passwordUser } from './passwords.js';
import { imagePathOf, isIgnoredSecretsEntry, repoPathOf } from './paths.js';
import { configuredRecipients, describeRecipients, describeStanzas, recipientsMatch } from './recipients.js';
import { scanDirectory, scanHeadTree } from './scan.js';
import { decryptSecret, hostKeyPublic, safeImagePath, secretSpec, type ImageSecret } from './store.js';
import { readSecretFiles } from './workdir.js';

// `ramboot secrets check`: everything that would make a build fail or leak, found
// without building. Each problem names the file it is about.

export interface Problem {
  /** A repository path ("secrets/etc/x.age", "root/etc/key", "HEAD:path") or config key. */
  where: string;
  problem: string;
}

export async function checkSecrets(repoDir: string, config: Config, identities: Identity[]): Promise<{ problems: Problem[]; checked: number }> {
  const problems: Problem[] = [];
  const decrypted: ImageSecret[] = [];
  const present = new Set<string>();
  const files = (await readSecretFiles(repoDir)).filter((f) => !isIgnoredSecretsEntry(f.repoPath));
  for (const file of files) {
    try {
      present.add(imagePathOf(file.repoPath));
      const path = safeImagePath(file);
      const configured = configuredRecipients(config, path, join(repoDir, CONFIG_FILE));
      const { plaintext, stanzas } = await decryptSecret(file, path, config, identities);
      // A console password must hold one line; the build would refuse it otherwise.
      if (passwordUser(path) !== undefined) passwordOf(path, plaintext);
      decrypted.push({ path, ...secretSpec(config, path), data: Buffer.from(plaintext) });
      if (!recipientsMatch(stanzas, configured)) {
        problems.push({
          where: file.repoPath,
          problem:
            `is encrypted to ${describeStanzas(stanzas, configured)} but ramboot.yaml lists ${describeRecipients(configured)}; ` +
            'run `ramboot secrets rekey`',
        });
      }
    } catch (err) {
      if (!(err instanceof RambootError)) throw err;
      problems.push({ where: file.repoPath, problem: err.message });
    }
  }
  for (const path of Object.keys(config.secrets.files).sort()) {
    if (!present.has(path)) {
      problems.push({ where: repoPathOf(path), problem: `is missing; ramboot.yaml configures it (secrets.files.${path})` });
    }
  }
  problems.push(...hostKeyProblems(decrypted, present, config));
  for (const f of [...(await scanDirectory(repoDir, 'root')), ...(await scanHeadTree(repoDir))]) {
    problems.push({ where: f.where, problem: `holds a plaintext private key (${f.marker}); move it to secrets/ with \`ramboot secrets add\`` });
  }
  return { problems, checked: files.length };
}

/** Plaintext in RAM that a killed `secrets edit` left and the sweep could not remove. */
export function leftoverProblems(failed: { dir: string; reason: string }[]): Problem[] {
  return failed.map((f) => ({
    where: f.dir,
    problem: `holds plaintext a killed \`ramboot secrets edit\` left, and removing it failed (${f.reason}); remove it by hand (rm -rf ${f.dir})`,
  }));
}

// Deploy pins the machine's SSH key to this secret, so without it no deploy can connect.
function hostKeyProblems(decrypted: ImageSecret[], present: Set<string>, config: Config): Problem[] {
  const path = config.secrets.host_key;
  const where = repoPathOf(path);
  if (!present.has(path)) {
    // A host key listed under secrets.files was already reported missing above.
    if (path in config.secrets.files) return [];
    return [{
      where,
      problem: `is missing; it is the SSH host key the controller pins (secrets.host_key); ` +
        `create it with \`ramboot secrets add ${path} --generate ssh-ed25519\``,
    }];
  }
  try {
    hostKeyPublic(decrypted, config);
    return [];
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    return [{ where, problem: err.message }];
  }
}
