import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import * as fs from 'node:fs';
import git from 'isomorphic-git';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { parseDocument } from 'yaml';
import { generateInitialSecrets, INITIAL_ROOT_PASSWORD } from './verbs/secrets.js';
import { readIdentityFile } from '../../secrets/identity.js';
import { generateSshEd25519 } from '../../secrets/ssh-private.js';
import { packagePath } from '../../lib/package.js';
import { UsageError } from '../../lib/errors.js';

// `ramboot init`: a new machine repository, ready to build. The controller's age
// identity and SSH client key are made once per user (~/.config/ramboot) and reused.

export interface InitOptions {
  dir: string;
  distro: 'alpine' | 'debian';
  /** The controller's age identity; made at ~/.config/ramboot/identity.txt when missing. */
  identity?: string;
}

const TEMPLATES = { alpine: 'repo-template', debian: 'examples/debian' };
/** The CI workflows (`ramboot check` and `ramboot plan` on pull requests) live in repo-template/; every distro's repository gets them. */
const CI_WORKFLOWS = ['.github', '.forgejo', '.gitea'];

export async function initRepo(o: InitOptions): Promise<void> {
  if (existsSync(o.dir) && readdirSync(o.dir).length > 0) {
    throw new UsageError(`failed to init ${o.dir}: the directory is not empty`, { step: 'init', input: o.dir });
  }
  const template = packagePath(TEMPLATES[o.distro]);
  cpSync(template, o.dir, { recursive: true });
  for (const d of CI_WORKFLOWS) if (!existsSync(join(o.dir, d))) cpSync(packagePath(TEMPLATES.alpine, d), join(o.dir, d), { recursive: true });

  const home = join(process.env.HOME ?? homedir(), '.config', 'ramboot');
  const identityPath = o.identity || process.env.RAMBOOT_IDENTITY || join(home, 'identity.txt');
  const recipient = await ensureAgeIdentity(identityPath);
  const clientKey = join(home, 'id_ed25519');
  const clientPub = ensureClientKey(clientKey);

  const configFile = join(o.dir, 'ramboot.yaml');
  const doc = parseDocument(readFileSync(configFile, 'utf8'));
  doc.setIn(['secrets', 'recipients'], [recipient]);
  doc.setIn(['secrets', 'identity'], identityPath);
  doc.setIn(['host', 'identity'], clientKey);
  writeFileSync(configFile, doc.toString());

  const { fingerprint } = await generateInitialSecrets(o.dir, [recipient], clientPub);
  await commitAll(o.dir, `ramboot init (${o.distro})`);
  process.stdout.write(
    `initialised ${o.dir} (${o.distro})\n` +
      `  secrets are encrypted to ${recipient} (identity ${identityPath})\n` +
      `  the machine's SSH host key: ${fingerprint}\n` +
      `  root logs in with ${clientKey}\n` +
      `  root's console password: \`ramboot secrets edit ${INITIAL_ROOT_PASSWORD} --repo ${o.dir}\` shows it\n` +
      `next: ramboot up --repo ${o.dir}\n`,
  );
}

async function ensureAgeIdentity(path: string): Promise<string> {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const id = await generateIdentity();
    writeFileSync(path, `# created by ramboot init: the controller's age identity\n# public key: ${await identityToRecipient(id)}\n${id}\n`, { mode: 0o600 });
  }
  const [identity] = await readIdentityFile(path);
  return identity!.recipient;
}

function ensureClientKey(path: string): string {
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const key = generateSshEd25519('ramboot-controller');
    writeFileSync(path, key.privateKey, { mode: 0o600 });
    writeFileSync(`${path}.pub`, `${key.publicLine}\n`);
    chmodSync(path, 0o600);
  }
  return readFileSync(`${path}.pub`, 'utf8');
}

async function commitAll(dir: string, message: string): Promise<void> {
  await git.init({ fs, dir, defaultBranch: 'main' });
  // isomorphic-git writes the settings of a case-insensitive file system without
  // symlinks; the git CLI would then drop executable bits and turn symlinks in root/
  // into plain files. This repository lives on Linux.
  for (const [path, value] of [['core.filemode', true], ['core.symlinks', true], ['core.ignorecase', false]] as const) {
    await git.setConfig({ fs, dir, path, value });
  }
  await git.add({ fs, dir, filepath: '.' });
  const author = { name: 'ramboot', email: 'ramboot@localhost' };
  await git.commit({ fs, dir, message, author, committer: author });
}
