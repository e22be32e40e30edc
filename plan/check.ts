import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { gitSource, listMachines, machineSource, parseSourceConfig, type Source } from '../builder/source.js';
import { parsePackages } from '../builder/packages.js';
import { CONFIG_FILE } from '../lib/config.js';
import type { Config } from '../lib/config-schema.js';
import { RambootError } from '../lib/errors.js';
import { repoPathOf } from '../secrets/paths.js';
import { readEnrollment, TPM_RECIPIENT, type Enrollment } from '../secrets/sealed.js';
import { scanDirectory } from '../secrets/scan.js';
import { commitsBetween, gitDirOf, scanCommits } from './history.js';
import { readCommitSecrets, staleness } from './secrets.js';
import { exposure } from '../image/medium.js';

// `ramboot check`, for CI on pull requests: everything about a commit that would make
// its build fail or leak a secret, found without building and without the controller's
// identity (CI is not trusted with it). Each problem is one line that names its file.

export interface CheckOptions {
  repoDir: string;
  /** The commit to check (default HEAD). */
  rev?: string;
  /** Scan for private keys only the commits after this one (default: all of the history). */
  base?: string;
}

export interface CheckReport {
  problems: string[];
  secrets: number;
  commits: number;
}

const FSTAB = 'root/etc/fstab';
const MODE_FIX = 'fmask=0177,dmask=0077';

export async function checkRepository(o: CheckOptions): Promise<CheckReport> {
  const repo = await gitSource(o.repoDir, o.rev);
  const problems: string[] = [];
  let secrets = 0;
  // A repository of several machines is checked as each of them sees it.
  const machines = await listMachines(repo);
  for (const source of machines.length ? await Promise.all(machines.map((m) => machineSource(repo, m))) : [repo]) {
    const found: string[] = [];
    secrets += await machineProblems(source, found);
    problems.push(...found.map((p) => (source.machine ? `machine ${source.machine.name}: ${p}` : p)));
  }
  const commits = await keyProblems(o, repo, problems);
  return { problems, secrets, commits };
}

/** The problems of one machine's files; the number of secrets checked. */
async function machineProblems(source: Source, problems: string[]): Promise<number> {
  const config = await configProblems(source, problems);
  await packageProblems(source, problems);
  if (!config) return 0;
  const secrets = await secretProblems(source, config, problems);
  const fstab = fstabProblem((await source.readFile(FSTAB))?.toString(), config.boot.medium);
  if (fstab) problems.push(fstab);
  await sealedProblems(source, config, problems);
  return secrets;
}

async function configProblems(source: Source, problems: string[]): Promise<Config | undefined> {
  const text = await source.readFile(CONFIG_FILE);
  if (!text) {
    problems.push(`${CONFIG_FILE}: missing in ${source.label}; \`ramboot init\` makes a machine repository`);
    return undefined;
  }
  try {
    return await parseSourceConfig(source);
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    problems.push(err.message);
    return undefined;
  }
}

async function packageProblems(source: Source, problems: string[]): Promise<void> {
  try {
    parsePackages((await source.readFile('packages'))?.toString() ?? '', 'packages');
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    problems.push(err.message);
  }
}

/** Damaged or unusable secret files, stale recipients, configured secrets that are missing, the host key. */
async function secretProblems(source: Source, config: Config, problems: string[]): Promise<number> {
  const { files } = await readCommitSecrets(source, config, CONFIG_FILE);
  for (const f of files.values()) {
    if (f.problem) problems.push(f.problem.startsWith(f.repoPath) ? f.problem : `${f.repoPath}: ${f.problem}`);
    const stale = staleness(f);
    if (stale) problems.push(`${f.repoPath} ${stale}`);
  }
  for (const path of Object.keys(config.secrets.files).sort()) {
    if (!files.has(path)) problems.push(`${repoPathOf(path)} is missing; ramboot.yaml configures it (secrets.files.${path})`);
  }
  const hostKey = config.secrets.host_key;
  if (!files.has(hostKey) && !(hostKey in config.secrets.files)) {
    problems.push(
      `${repoPathOf(hostKey)} is missing; it is the SSH host key the controller pins (secrets.host_key); ` +
        `create it with \`ramboot secrets add ${hostKey} --generate ssh-ed25519\``,
    );
  }
  return files.size;
}

/** secrets.at_rest: tpm needs a machine enrolled: a build of this commit would fail without one. */
async function sealedProblems(source: Source, config: Config, problems: string[]): Promise<void> {
  let enrollment: Enrollment | undefined;
  try {
    enrollment = await readEnrollment((path) => source.readFile(path));
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    problems.push(err.message);
    return;
  }
  if (config.secrets.at_rest === 'tpm' && !enrollment) {
    problems.push(
      `${CONFIG_FILE}: secrets.at_rest is tpm, but no machine is enrolled (${TPM_RECIPIENT} is missing); ` +
        'run `ramboot secrets enroll` against the running machine and commit what it writes, or set secrets.at_rest: medium',
    );
  }
}

/**
 * The boot medium holds the secrets segment, and FAT has no modes of its own: every file
 * gets the mount's fmask. The fstab line for boot.medium must keep its files root's alone
 * (image/medium.ts: the same rule the deploy preflight applies to the built image).
 */
export function fstabProblem(text: string | undefined, medium: string): string | undefined {
  const example = `UUID=XXXX-XXXX ${medium} vfat rw,noatime,${MODE_FIX} 0 0`;
  if (text === undefined) return `${FSTAB} is missing; it must mount the boot medium (boot.medium ${medium}), e.g. \`${example}\``;
  const want = medium.replace(/\/+$/, '') || '/';
  const lines = text.split('\n');
  const n = lines.findIndex((l) => (l.replace(/#.*/, '').trim().split(/\s+/)[1] ?? '').replace(/\/+$/, '') === want);
  if (n < 0) return `${FSTAB} has no line for the boot medium (boot.medium ${medium}); add one, e.g. \`${example}\``;
  const [, , type, options = 'defaults'] = lines[n]!.replace(/#.*/, '').trim().split(/\s+/);
  const problem = exposure({ type, options });
  return problem ? `${FSTAB}, line ${n + 1}: ${problem}` : undefined;
}

/** Plaintext private keys in the history being built, and in the working tree's root/. */
async function keyProblems(o: CheckOptions, source: Source, problems: string[]): Promise<number> {
  const gitdir = gitDirOf(o.repoDir);
  const base = o.base ? (await gitSource(o.repoDir, o.base)).commit : undefined;
  const commits = await commitsBetween(gitdir, source.commit!, base);
  const found = await scanCommits(gitdir, commits);
  for (const f of found) {
    problems.push(
      `${f.where} holds a plaintext private key (${f.marker}); it is in the history: remove it, rotate that key ` +
        '(every clone has it), and keep keys in secrets/ with `ramboot secrets add`',
    );
  }
  const committed = new Set(found.map((f) => f.where.slice(f.where.indexOf(':') + 1)));
  if (existsSync(join(o.repoDir, 'root'))) {
    for (const f of await scanDirectory(o.repoDir, 'root')) {
      if (!committed.has(f.where)) problems.push(`${f.where} holds a plaintext private key (${f.marker}); move it to secrets/ with \`ramboot secrets add\``);
    }
  }
  return commits.length;
}
