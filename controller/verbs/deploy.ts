import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { readManifest } from '../../image/manifest.js';
import { CONFIG_FILE, parseConfig } from '../../lib/config.js';
import type { Config } from '../../lib/config-schema.js';
import { RambootError, UsageError, describe } from '../../lib/errors.js';
import { bootloaderInstall } from '../../deploy/bootloader.js';
import { deploy, recordBuildFailure, type DeployEvent, type DeployResult } from '../../deploy/deploy.js';
import { Journal, acquireLock } from '../../deploy/journal.js';
import { formatStatus, status } from '../../deploy/status.js';
import type { Target } from '../../deploy/ssh.js';
import { EXIT_INCOMPLETE, EXIT_USAGE, VERDICT_TEXT, verdictLine } from '../../deploy/verdict.js';

// The CLI verbs of the deploy module: `ramboot deploy`, `ramboot bootloader install`,
// `ramboot status`. Each returns the process exit code; progress goes to stderr, the
// verdict (or the status) to stdout.

export interface CommonOptions {
  /** The machine's repository (ramboot.yaml); default: the current directory. */
  repo?: string;
  /** Must be the host ramboot.yaml describes. */
  host?: string;
  /** Journals and locks; default: <repo>/.ramboot/state. */
  stateDir?: string;
  /** Where the machine answers, overriding host.address and host.port (e.g. the virtual NAS's forwarded port). */
  address?: string;
  port?: number;
  /** The controller's SSH key; default: host.identity, then ~/.ssh/id_ed25519. */
  identity?: string;
  /** The host key to pin when no image says it (from the host key secret). */
  hostKey?: string;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WriteStream;
}

export interface DeployCommandOptions extends CommonOptions {
  /** An image directory; without it, `build` makes one. */
  image?: string;
  /** Builds the repository and returns the image directory (wired in by the controller). */
  build?: (repo: string) => Promise<string>;
  /** Deploy a build that was rolled back before. */
  force?: boolean;
}

export async function deployCommand(opts: DeployCommandOptions): Promise<number> {
  const io = streams(opts);
  let journal: Journal | undefined;
  try {
    const { repo, config, target } = await loadTarget(opts);
    const stateDir = opts.stateDir ?? join(repo, '.ramboot', 'state');
    journal = await Journal.open(stateDir, target.name);
    const release = acquireLock(stateDir, target.name);
    try {
      let imageDir = opts.image && resolve(opts.image);
      if (!imageDir) {
        if (!opts.build) throw new UsageError('failed to deploy: no image given (--image DIR)', { step: 'deploy' });
        try {
          imageDir = await opts.build(repo);
        } catch (err) {
          const result = await recordBuildFailure(journal, describe(err));
          io.out.write(`${verdictLine(result.outcome)}\n`);
          return result.exitCode;
        }
      }
      const manifest = await readManifest(imageDir);
      const known = [opts.hostKey, journal.lastPromotedHostKey()].filter((k): k is string => !!k);
      const result = await deploy({
        target,
        journal,
        imageDir,
        manifest,
        config,
        previousHostKeys: known,
        force: opts.force,
        onEvent: reporter(io.err),
      });
      io.out.write(`${formatVerdict(result)}\n`);
      return result.exitCode;
    } finally {
      release();
    }
  } catch (err) {
    return failure(io, err, journal?.open() ? EXIT_INCOMPLETE : 1);
  }
}

export async function bootloaderCommand(opts: CommonOptions): Promise<number> {
  const io = streams(opts);
  try {
    const { repo, config, target } = await loadTarget(opts);
    const journal = await Journal.open(opts.stateDir ?? join(repo, '.ramboot', 'state'), target.name);
    const hostKey = pinnedKey(opts, journal, target.name);
    io.err.write(`installing extlinux on ${target.name}:${config.boot.medium}\n`);
    const r = await bootloaderInstall({ ...target, hostKey }, { medium: config.boot.medium, append: config.boot.append });
    const slots = (['lts', 'old', 'new'] as const).filter((n) => r.slots[n]).map((n) => `${n}=${r.slots[n]!.buildId}`);
    io.out.write(
      `${r.adopted.length > 0 ? `adopted ${r.adopted.join(', ')}` : 'already managed'}; extlinux installed; ${slots.join(' ')}` +
        `${r.movedAside.length > 0 ? `; former config kept as ${r.movedAside.join(', ')}` : ''}\n`,
    );
    return 0;
  } catch (err) {
    return failure(io, err, 1);
  }
}

export async function statusCommand(opts: CommonOptions & { json?: boolean }): Promise<number> {
  const io = streams(opts);
  try {
    const { repo, config, target } = await loadTarget(opts);
    const journal = await Journal.open(opts.stateDir ?? join(repo, '.ramboot', 'state'), target.name);
    const report = await status({ ...target, hostKey: pinnedKey(opts, journal, target.name) }, { medium: config.boot.medium, journal });
    io.out.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatStatus(report)}\n`);
    return report.reachable ? 0 : 1;
  } catch (err) {
    return failure(io, err, 1);
  }
}

function streams(opts: CommonOptions) {
  return { out: opts.stdout ?? process.stdout, err: opts.stderr ?? process.stderr };
}

/** A RambootError becomes a message and an exit code; anything else is a bug and propagates with its stack. */
function failure(io: ReturnType<typeof streams>, err: unknown, code: number): number {
  if (!(err instanceof RambootError)) throw err;
  io.err.write(`ramboot: ${err.message}\n`);
  return err instanceof UsageError ? EXIT_USAGE : code;
}

/** The machine of the repository's ramboot.yaml, without its host key (that comes from the image). */
export async function loadTarget(opts: CommonOptions): Promise<{ repo: string; config: Config; target: Omit<Target, 'hostKey'> }> {
  const repo = resolve(opts.repo ?? '.');
  const file = join(repo, CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`failed to read ${file}: ${describe(err)} (is --repo the machine's repository?)`, { step: 'load config', input: file });
  }
  const config = parseConfig(text, file);
  const h = config.host;
  if (opts.host !== undefined && opts.host !== h.name) {
    throw new UsageError(`failed to find host ${opts.host}: unknown host; ${file} describes ${h.name}`, { step: 'load config', input: opts.host });
  }
  return {
    repo,
    config,
    target: {
      name: h.name,
      address: opts.address ?? h.address ?? h.name,
      port: opts.port ?? h.port,
      user: h.user,
      identityFile: identityFile(repo, opts.identity ?? h.identity),
      powerCycle: config.trial.power_cycle,
    },
  };
}

function identityFile(repo: string, configured: string | undefined): string {
  if (configured) {
    const expanded = configured.startsWith('~/') ? join(homedir(), configured.slice(2)) : configured;
    return isAbsolute(expanded) ? expanded : join(repo, expanded);
  }
  const fallback = join(homedir(), '.ssh', 'id_ed25519');
  if (!existsSync(fallback)) {
    throw new UsageError(`failed to find an SSH key for the machine: set host.identity in ${CONFIG_FILE} or pass --identity (${fallback} does not exist)`, {
      step: 'load config',
    });
  }
  return fallback;
}

function pinnedKey(opts: CommonOptions, journal: Journal, host: string): string {
  const key = opts.hostKey ?? journal.lastPromotedHostKey();
  if (!key) {
    throw new UsageError(`failed to connect to ${host}: no host key to pin (no promoted deploy in the journal yet; pass the machine's public host key)`, {
      step: 'connect',
      host,
    });
  }
  return key;
}

/** Human progress on stderr: a line per step and per health check attempt, a live line for bytes and waits on a terminal. */
export function reporter(stream: NodeJS.WritableStream & { isTTY?: boolean }): (e: DeployEvent) => void {
  const tty = !!stream.isTTY;
  let live = false;
  let lastPrinted = 0;
  const line = (text: string) => {
    stream.write(`${live ? '\r\x1b[2K' : ''}${text}\n`);
    live = false;
  };
  const update = (text: string, every: number) => {
    if (tty) {
      stream.write(`\r\x1b[2K${text}`);
      live = true;
    } else if (Date.now() - lastPrinted >= every) {
      stream.write(`${text}\n`);
      lastPrinted = Date.now();
    }
  };
  return (e) => {
    switch (e.kind) {
      case 'step':
        line(`${e.message}…`);
        break;
      case 'running':
        line(`${e.host} runs build ${e.running.build ?? e.running.cmdlineBuild ?? 'unknown'} from slot ${e.running.slot ?? '(not booted by ramboot)'}`);
        break;
      case 'upload':
        update(`  sent ${mib(e.sent)} of ${mib(e.total)} (${e.file.split('/').pop()})`, 10_000);
        if (e.sent === e.total) line(`  sent ${mib(e.total)}`);
        break;
      case 'wait':
        update(`  waiting for ${e.what}: ${Math.round(e.elapsedMs / 1000)} s${e.observation.reachable ? '' : ` (${e.observation.error.split(':').pop()?.trim()})`}`, 30_000);
        break;
      case 'check': {
        const c = e.event;
        line(`  check ${c.check}: ${c.ok ? 'ok' : 'failed'} (attempt ${c.attempt}/${c.of})${c.ok ? '' : `: ${c.output.split('\n')[0]}`}`);
        break;
      }
      case 'verdict':
        if (live) line('');
        break;
    }
  };
}

export function formatVerdict(r: DeployResult): string {
  const o = r.outcome;
  const lines = [`${VERDICT_TEXT[o.verdict]}: ${o.message}`];
  if (r.bytesSent !== undefined && r.imageBytes) {
    lines[0] += ` (sent ${mib(r.bytesSent)} of a ${mib(r.imageBytes)} image, ${((100 * r.bytesSent) / r.imageBytes).toFixed(1)}%)`;
  }
  if (o.output) lines.push(...o.output.split('\n').map((l) => `  | ${l}`));
  return lines.join('\n');
}

function mib(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
