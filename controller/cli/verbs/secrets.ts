import { access, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CONFIG_FILE, MACHINES_DIR } from '../../../lib/config.js';
import type { Config } from '../../../lib/config-schema.js';
import { ArgumentError, RambootError, UsageError } from '../../../lib/errors.js';
import { verb, type Verb } from '../args.js';
import { dispatch } from '../dispatch.js';
import { AgeDecryptError, encrypt, readStanzas, type Identity } from '../../../secrets/age.js';
import { checkSecrets, leftoverProblems } from '../../../secrets/check.js';
import { editInRam } from '../../../secrets/edit.js';
import { identityPath, loadIdentities } from '../../../secrets/identity.js';
import { WrongIdentityError } from '../../../secrets/errors.js';
import { PASSWORDS_DIR } from '../../../secrets/passwords.js';
import { checkImagePath, isIgnoredSecretsEntry, repoPathOf } from '../../../secrets/paths.js';
import { sweepRamDirs, type Sweep } from '../../../secrets/ramdir.js';
import type { Recipient } from '../../../secrets/keys.js';
import { configuredRecipients, describeRecipients, describeStanzas, recipientsMatch } from '../../../secrets/recipients.js';
import { generateSshEd25519 } from '../../../secrets/ssh-private.js';
import { fingerprint } from '../../../secrets/ssh-public.js';
import { decryptSecret, indexSecrets, safeImagePath, secretSpec, sshPublicLine, type EncryptedSecret } from '../../../secrets/store.js';
import { generateValue, KINDS, shapeOf, type SecretKind } from '../../../secrets/value.js';
import { loadRepoConfig, readSecretFile, readSecretFiles, writeSecretFile } from '../../../secrets/workdir.js';

// `ramboot secrets VERB`: manage secrets/ in a repository's working directory. Output
// for people goes to stdout, failures to stderr; exit codes as every verb (lib/errors.ts).

export interface SecretsIO {
  repoDir: string;
  stdin: NodeJS.ReadableStream;
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: Record<string, string | undefined>;
}

interface SecretArgs {
  path: string;
  from?: string;
  generate?: string;
  force: boolean;
  all: boolean;
}

interface Context {
  io: SecretsIO;
  /** Where secrets/ is: the repository, or machines/NAME/ with --machine. */
  dir: string;
  config: Config;
  configFile: string;
  /** The controller's identity; loaded on first use, since add and list can do without. */
  identities(): Promise<Identity[]>;
  /** True when an identity is named anywhere (option, environment, config). */
  hasIdentity: boolean;
  /** What killed `secrets edit` runs had left in RAM, swept before this verb started. */
  sweep: Sweep;
}

const identity = { type: 'string', short: 'i', value: 'FILE', help: 'the controller\'s age identity (default $RAMBOOT_IDENTITY, then secrets.identity)' } as const;
const machineOption = { type: 'string', value: 'NAME', help: 'a machine\'s own secrets (machines/NAME/secrets/), with its ramboot.yaml over the repository\'s' } as const;
const repoOption = { type: 'string', value: 'DIR', default: '.', help: 'the machine\'s repository: its working tree (secrets/ and ramboot.yaml as they are, committed or not)' } as const;
const PATH_ARG = { name: 'PATH', help: 'the file\'s path in the image, e.g. etc/ssh/ssh_host_ed25519_key' };

/** The secrets verbs; `io(repo)` gives the streams and environment for a repository. */
export function secretsVerbs(io: (repoDir: string) => SecretsIO): Verb[] {
  const run = (fn: (a: SecretArgs, ctx: Context) => Promise<number>) =>
    async (values: { repo: string; machine?: string; identity?: string; from?: string; generate?: string; force?: boolean; all?: boolean }, args: string[]) => {
      const ctx = await context(io(resolve(values.repo)), values.identity, values.machine);
      return fn({ path: args[0] ?? '', from: values.from, generate: values.generate, force: !!values.force, all: !!values.all }, ctx);
    };
  return [
    verb({
      name: 'secrets add',
      summary: 'encrypt a new secret (from FILE, generated, or stdin) to secrets/PATH.age',
      args: [PATH_ARG],
      options: {
        from: { type: 'string', value: 'FILE', help: 'read the value from FILE' },
        generate: { type: 'string', choices: KINDS, help: 'generate the value' },
        force: { type: 'boolean', help: 'replace an existing secret' },
        repo: repoOption, machine: machineOption,
        identity,
      },
      run: run(add),
    }),
    verb({ name: 'secrets edit', summary: 'decrypt into RAM, run $VISUAL/$EDITOR, re-encrypt if changed', args: [PATH_ARG], options: { repo: repoOption, machine: machineOption, identity }, run: run(edit) }),
    verb({ name: 'secrets list', summary: 'every secret: mode, recipients, whether this identity can decrypt it', options: { repo: repoOption, machine: machineOption, identity }, run: run(list) }),
    verb({
      name: 'secrets rekey',
      summary: 're-encrypt secrets whose recipients differ from ramboot.yaml',
      options: { all: { type: 'boolean', help: 'every secret, whatever its recipients' }, repo: repoOption, machine: machineOption, identity },
      run: run(rekey),
    }),
    verb({ name: 'secrets rotate', summary: 'replace a secret with a new value of the same kind', args: [PATH_ARG], options: { repo: repoOption, machine: machineOption, identity }, run: run(rotate) }),
    verb({
      name: 'secrets check',
      summary: 'fail on secrets that do not decrypt, stale recipients, missing secrets, plaintext private keys',
      options: { repo: repoOption, machine: machineOption, identity },
      run: run(check),
    }),
    verb({ name: 'secrets hostkey', summary: 'print the SSH host key fingerprint and public key the controller pins', options: { repo: repoOption, machine: machineOption, identity }, run: run(hostkey) }),
  ];
}

/** `ramboot secrets ARGV…` in this process, with these streams: what the tests drive. */
export function secretsCommand(argv: string[], sio: SecretsIO): Promise<number> {
  return dispatch(secretsVerbs((repoDir) => ({ ...sio, repoDir })), ['secrets', ...argv, '--repo', sio.repoDir], sio);
}

async function context(io: SecretsIO, identityOption: string | undefined, machine?: string): Promise<Context> {
  // First of all, so that even a verb that then fails removes the plaintext a killed edit left.
  const sweep = await sweepRamDirs(io.env);
  reportSweep(io, sweep);
  const config = await loadRepoConfig(io.repoDir, machine);
  const loc = { path: identityOption, env: io.env, config, repoDir: io.repoDir };
  let loaded: Promise<Identity[]> | undefined;
  return {
    io,
    dir: machine ? join(io.repoDir, MACHINES_DIR, machine) : io.repoDir,
    config,
    configFile: join(io.repoDir, ...(machine ? [MACHINES_DIR, machine] : []), CONFIG_FILE),
    identities: () => (loaded ??= loadIdentities(loc)),
    hasIdentity: identityPath(loc) !== undefined,
    sweep,
  };
}

/** Says on stderr what the sweep removed and what it could not (`check` also counts those as problems). */
function reportSweep(io: SecretsIO, sweep: Sweep): void {
  for (const dir of sweep.removed) io.stderr.write(`removed ${dir}: plaintext a killed \`ramboot secrets edit\` had left in RAM\n`);
  for (const f of sweep.failed) io.stderr.write(`warning: failed to remove ${f.dir} (${f.reason}): it holds plaintext a killed \`ramboot secrets edit\` left; remove it by hand\n`);
}

function recipientsOf(ctx: Context, imagePath: string): Recipient[] {
  return configuredRecipients(ctx.config, imagePath, ctx.configFile);
}

/** Encrypts to the secret's configured recipients and writes it atomically. */
async function store(ctx: Context, imagePath: string, plaintext: Uint8Array): Promise<string> {
  const recipients = recipientsOf(ctx, imagePath);
  const ciphertext = await encrypt(plaintext, recipients.map((r) => r.text), { armor: true });
  const repoPath = await writeSecretFile(ctx.dir, imagePath, ciphertext);
  ctx.io.stdout.write(`wrote ${repoPath} (encrypted to ${describeRecipients(recipients)})\n`);
  return repoPath;
}

async function requireSecret(ctx: Context, imagePath: string): Promise<EncryptedSecret> {
  const file = await readSecretFile(ctx.dir, imagePath);
  if (!file) {
    throw new UsageError(`no secret ${repoPathOf(imagePath)}; create it with \`ramboot secrets add ${imagePath}\``, {
      step: 'read secret',
      input: repoPathOf(imagePath),
    });
  }
  return file;
}

async function decrypted(ctx: Context, imagePath: string): Promise<Uint8Array> {
  const file = await requireSecret(ctx, imagePath);
  return (await decryptSecret(file, imagePath, ctx.config, await ctx.identities())).plaintext;
}

function printSshKey(ctx: Context, imagePath: string, publicLine: string): void {
  const role = imagePath === ctx.config.secrets.host_key ? 'host key' : 'public key';
  ctx.io.stdout.write(`${role} fingerprint: ${fingerprint(publicLine)}\n${publicLine}\n`);
}

async function add(args: SecretArgs, ctx: Context): Promise<number> {
  const imagePath = checkImagePath(args.path);
  const from = args.from;
  const kind = args.generate;
  if (from !== undefined && kind !== undefined) throw new ArgumentError('ramboot secrets add: takes --from FILE or --generate KIND, not both', 'secrets add');
  if (!args.force && (await readSecretFile(ctx.dir, imagePath))) {
    throw usage(`${repoPathOf(imagePath)} exists; pass --force to replace it, or use \`ramboot secrets edit ${imagePath}\``);
  }
  const plaintext = kind !== undefined ? generated(ctx, kind as SecretKind) : from !== undefined ? await readFile(from) : await fromStdin(ctx.io);
  if (plaintext.length === 0) throw usage('the secret is empty; nothing to store');
  // The host key must be an ssh key (deploy pins it): check before writing anything.
  const sshKey = kind === 'ssh-ed25519' || imagePath === ctx.config.secrets.host_key;
  const publicLine = sshKey ? sshPublicLine(imagePath, plaintext) : undefined;
  await store(ctx, imagePath, plaintext);
  if (publicLine) printSshKey(ctx, imagePath, publicLine);
  return 0;
}

function generated(ctx: Context, kind: SecretKind): Buffer {
  return generateValue({ kind, comment: `root@${ctx.config.host.name}` });
}

async function edit(args: SecretArgs, ctx: Context): Promise<number> {
  const imagePath = checkImagePath(args.path);
  const plaintext = await decrypted(ctx, imagePath);
  const editor = ctx.io.env.VISUAL || ctx.io.env.EDITOR || 'vi';
  const outcome = await editInRam(plaintext, imagePath, editor, ctx.io.env);
  if (outcome.kind === 'failed') {
    ctx.io.stderr.write(`ramboot secrets edit: ${outcome.reason}; ${repoPathOf(imagePath)} is unchanged\n`);
    return 1;
  }
  if (outcome.kind === 'unchanged') {
    ctx.io.stdout.write(`${repoPathOf(imagePath)} unchanged\n`);
    return 0;
  }
  await store(ctx, imagePath, outcome.plaintext);
  return 0;
}

async function list(_args: SecretArgs, ctx: Context): Promise<number> {
  const identities = ctx.hasIdentity ? await ctx.identities() : undefined;
  const rows: string[][] = [['PATH', 'MODE', 'RECIPIENTS', 'DECRYPTS', 'STATUS']];
  const present = new Set<string>();
  for (const file of await readSecretFiles(ctx.dir)) {
    if (isIgnoredSecretsEntry(file.repoPath)) continue;
    rows.push(await listRow(ctx, file, identities, present));
  }
  for (const path of Object.keys(ctx.config.secrets.files).sort()) {
    if (!present.has(path)) rows.push([path, mode(ctx, path), '-', '-', `missing (${repoPathOf(path)})`]);
  }
  ctx.io.stdout.write(table(rows));
  if (!identities) ctx.io.stdout.write('(no identity configured: DECRYPTS not checked)\n');
  return 0;
}

async function listRow(ctx: Context, file: EncryptedSecret, identities: Identity[] | undefined, present: Set<string>): Promise<string[]> {
  let path: string;
  try {
    path = safeImagePath(file);
  } catch (err) {
    if (!(err instanceof RambootError)) throw err;
    return [file.repoPath, '-', '-', '-', 'refused: not a safe secret path'];
  }
  present.add(path);
  const configured = recipientsOf(ctx, path);
  let stanzas;
  try {
    stanzas = await readStanzas(file.data);
  } catch (err) {
    if (!(err instanceof AgeDecryptError)) throw err;
    return [path, mode(ctx, path), '-', '-', 'damaged: not a valid age file'];
  }
  let decrypts = '-';
  if (identities) {
    try {
      await decryptSecret(file, path, ctx.config, identities);
      decrypts = 'yes';
    } catch (err) {
      if (!(err instanceof RambootError)) throw err;
      decrypts = err instanceof WrongIdentityError ? 'no' : 'damaged';
    }
  }
  const status = recipientsMatch(stanzas, configured) ? 'ok' : 'stale (rekey)';
  return [path, mode(ctx, path), describeStanzas(stanzas, configured), decrypts, status];
}

function mode(ctx: Context, imagePath: string): string {
  return secretSpec(ctx.config, imagePath).mode.toString(8).padStart(4, '0');
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

async function rekey(args: SecretArgs, ctx: Context): Promise<number> {
  const identities = await ctx.identities();
  const files = indexSecrets(await readSecretFiles(ctx.dir));
  // Prove every affected secret decrypts before rewriting any, so a rekey that cannot
  // finish changes nothing.
  const ready: { path: string; plaintext: Uint8Array }[] = [];
  const failures: string[] = [];
  for (const [path, file] of files) {
    try {
      if (!args.all && recipientsMatch(await readStanzas(file.data), recipientsOf(ctx, path))) continue;
      ready.push({ path, plaintext: (await decryptSecret(file, path, ctx.config, identities)).plaintext });
    } catch (err) {
      if (!(err instanceof RambootError || err instanceof AgeDecryptError)) throw err;
      failures.push(err instanceof AgeDecryptError ? `failed to read ${file.repoPath}: ${err.message}` : err.message);
    }
  }
  if (failures.length > 0) {
    ctx.io.stderr.write(`ramboot secrets rekey: nothing changed; these secrets cannot be decrypted:\n${failures.map((f) => `  ${f}\n`).join('')}`);
    return 1;
  }
  if (ready.length === 0) {
    ctx.io.stdout.write('every secret is encrypted to the recipients in ramboot.yaml; nothing to do\n');
    return 0;
  }
  for (const { path, plaintext } of ready) await store(ctx, path, plaintext);
  return 0;
}

async function rotate(args: SecretArgs, ctx: Context): Promise<number> {
  const imagePath = checkImagePath(args.path);
  const shape = shapeOf(await decrypted(ctx, imagePath));
  if ('problem' in shape) {
    throw usage(`cannot rotate ${repoPathOf(imagePath)}: ${shape.problem}; use \`ramboot secrets edit ${imagePath}\` or \`add --force\``);
  }
  const plaintext = generateValue(shape);
  await store(ctx, imagePath, plaintext);
  if (shape.kind === 'ssh-ed25519') printSshKey(ctx, imagePath, sshPublicLine(imagePath, plaintext));
  ctx.io.stdout.write(`rotated ${repoPathOf(imagePath)} (new ${shape.kind}); commit it to deploy the new value\n`);
  return 0;
}

async function check(_args: SecretArgs, ctx: Context): Promise<number> {
  const found = await checkSecrets(ctx.dir, ctx.config, await ctx.identities());
  const problems = [...leftoverProblems(ctx.sweep.failed), ...found.problems];
  const checked = found.checked;
  for (const p of problems) ctx.io.stdout.write(`${p.where}: ${p.problem}\n`);
  if (problems.length > 0) {
    ctx.io.stdout.write(`${problems.length} problem${problems.length === 1 ? '' : 's'}\n`);
    return 1;
  }
  ctx.io.stdout.write(`ok: ${checked} secret${checked === 1 ? '' : 's'} decrypt and match ramboot.yaml; no plaintext private keys\n`);
  return 0;
}

async function hostkey(_args: SecretArgs, ctx: Context): Promise<number> {
  const path = ctx.config.secrets.host_key;
  const line = sshPublicLine(path, await decrypted(ctx, path), 'the SSH host key (secrets.host_key)');
  ctx.io.stdout.write(`${fingerprint(line)}\n${line}\n`);
  return 0;
}

function usage(message: string): UsageError {
  return new UsageError(message, { step: 'secrets' });
}

async function fromStdin(io: SecretsIO): Promise<Buffer> {
  // At a terminal nothing prompts for the value otherwise: say how to end it.
  if ((io.stdin as { isTTY?: boolean }).isTTY) io.stderr.write('reading the secret from stdin; end it with Ctrl-D\n');
  const chunks: Buffer[] = [];
  for await (const chunk of io.stdin) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** The default secrets.host_key, which the ramboot.yaml `ramboot init` writes keeps. */
const INITIAL_HOST_KEY = 'etc/ssh/ssh_host_ed25519_key';
const INITIAL_AUTHORIZED_KEYS = 'root/.ssh/authorized_keys';
/** root's console password: the way in at the console when the network is down. */
export const INITIAL_ROOT_PASSWORD = `${PASSWORDS_DIR}/root`;

/**
 * For `ramboot init`: the machine's SSH host key, root's authorized_keys and root's
 * console password, encrypted to `recipients`. Refuses to replace existing secrets.
 * Returns what the controller will pin.
 */
export async function generateInitialSecrets(
  repoDir: string,
  recipients: string[],
  authorizedKeys: string,
): Promise<{ hostKey: string; fingerprint: string }> {
  if (authorizedKeys.trim() === '') throw usage('authorized_keys is empty; give at least one public key to log in with');
  for (const path of [INITIAL_HOST_KEY, INITIAL_AUTHORIZED_KEYS, INITIAL_ROOT_PASSWORD]) {
    if (await exists(join(repoDir, repoPathOf(path)))) throw usage(`${repoPathOf(path)} already exists in ${repoDir}; refusing to replace it`);
  }
  const key = generateSshEd25519('ramboot-host-key');
  const keys = authorizedKeys.endsWith('\n') ? authorizedKeys : `${authorizedKeys}\n`;
  // Encrypt all before writing any, so bad recipients leave no half-initialised secrets/.
  const files: [string, Uint8Array][] = [
    [INITIAL_HOST_KEY, await encrypt(Buffer.from(key.privateKey), recipients, { armor: true })],
    [INITIAL_AUTHORIZED_KEYS, await encrypt(Buffer.from(keys), recipients, { armor: true })],
    [INITIAL_ROOT_PASSWORD, await encrypt(generateValue({ kind: 'password' }), recipients, { armor: true })],
  ];
  for (const [path, ciphertext] of files) await writeSecretFile(repoDir, path, ciphertext);
  const hostKey = sshPublicLine(INITIAL_HOST_KEY, Buffer.from(key.privateKey));
  return { hostKey, fingerprint: fingerprint(hostKey) };
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
