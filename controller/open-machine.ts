import { existsSync, readFileSync } from 'node:fs';
import { makePrivateDir, writePrivateFile } from '../lib/private-file.js';
import { join, resolve } from 'node:path';
import { dirSource, gitSource, listMachines, machineSource, parseSourceConfig, selectMachine, type Source } from '../builder/source.js';
import type { Config } from '../lib/config-schema.js';
import { CONFIG_FILE, parseRepositorySettings, type RepositorySettings } from '../lib/config.js';
import { UsageError } from '../lib/errors.js';
import type { LocalSettings } from '../deploy/target.js';
import { monitorCommand } from '../vm/qemu.js';
import { machineState, migrateLegacyState, originOf, type MachineState } from './state.js';

// One machine as the CLI verbs see it: the configuration of a commit (never of the
// working tree: what deploys is what was committed), where its state lives, and how
// to reach it: its address, or the virtual NAS that `ramboot up` runs for it.

export interface Machine {
  /** The repository given (a working tree or a bare repository). */
  repo: string;
  origin: string;
  /** The machine, in a repository that describes several. */
  machine?: string;
  config: Config;
  state: MachineState;
  /** A one-line notice for the user (state moved out of the repository). */
  notice?: string;
}

export interface MachineRequest {
  repo: string;
  rev?: string;
  /** Read a directory instead of a commit (`build --dir`). */
  dir?: string;
  /** The machine, in a repository that describes several (machines/NAME/). */
  machine?: string;
  state?: string;
}

export async function openMachine(r: MachineRequest): Promise<Machine> {
  const repo = resolve(r.repo);
  const source = await selectMachine(r.dir ? await dirSource(resolve(r.dir)) : await gitSource(repo, r.rev), r.machine);
  const config = await parseSourceConfig(source);
  const origin = originOf(r.dir ?? repo);
  const workTree = existsSync(join(repo, '.git')) ? repo : r.dir ? resolve(r.dir) : undefined;
  const state = machineState({ state: r.state, origin, machine: source.machine?.name, workTree });
  const notice = workTree && !r.state && !process.env.RAMBOOT_STATE ? await migrateLegacyState(workTree, config.host.name, state) : undefined;
  return { repo, origin, machine: source.machine?.name, config, state, notice };
}

/** A commit's repository-wide settings (watch, rollout): from its top-level ramboot.yaml alone. */
export async function repositorySettings(source: Source): Promise<RepositorySettings> {
  const text = await source.readFile(CONFIG_FILE);
  if (!text) throw new UsageError(`failed to read ${CONFIG_FILE} from ${source.label}: no such file`, { step: 'read config', input: CONFIG_FILE });
  return parseRepositorySettings(text.toString(), CONFIG_FILE);
}

/**
 * A commit's settings as a machine sees them. In a repository of several machines and
 * with none named: the first machine's, for the settings they all share (watch,
 * rollout), which only the repository's ramboot.yaml sets.
 */
export async function configOf(source: Source, machine?: string): Promise<Config> {
  if (source.machine || (machine === undefined && (await listMachines(source)).length === 0)) return parseSourceConfig(source);
  return parseSourceConfig(await machineSource(source, machine ?? (await listMachines(source))[0]!));
}

/** What `ramboot up` records about the virtual NAS it runs, so that other verbs reach it. */
export interface VmRecord {
  pid: number;
  sshPort: number;
  httpPort: number;
  monitor: string;
  serialLog: string;
  /** The serial console, to type at (a unix socket). */
  serialSocket: string;
  disk: string;
}

export function recordVm(state: MachineState, rec: VmRecord): void {
  makePrivateDir(state.vm);
  writePrivateFile(join(state.vm, 'vm.json'), `${JSON.stringify(rec, null, 2)}\n`);
}

/** The virtual NAS of this machine, if a `ramboot up` is running it. */
export function runningVm(state: MachineState): VmRecord | undefined {
  const file = join(state.vm, 'vm.json');
  if (!existsSync(file)) return undefined;
  const rec = JSON.parse(readFileSync(file, 'utf8')) as VmRecord;
  try {
    process.kill(rec.pid, 0);
    return rec;
  } catch {
    return undefined;
  }
}

export interface Overrides {
  address?: string;
  port?: number;
  /** The controller's SSH key. */
  sshKey?: string;
}

/**
 * How to reach the machine an image is for: the overrides, else its host.address, else
 * the virtual NAS `ramboot up` runs (its forwarded SSH port; a power cycle through qemu).
 */
export function reachFor(host: Config['host'], state: MachineState, o: Overrides): LocalSettings {
  if (o.address || host.address) return { address: o.address, port: o.port, identity: o.sshKey };
  const vm = runningVm(state);
  if (!vm) {
    throw new UsageError(
      `failed to find ${host.name}: ramboot.yaml has no host.address and no virtual NAS is running for it; start one with \`ramboot up\`, or set host.address (or pass --address)`,
      { step: 'find machine', host: host.name },
    );
  }
  return {
    address: '127.0.0.1',
    port: o.port ?? vm.sshPort,
    identity: o.sshKey,
    // The virtual NAS restarts qemu on a reset: from outside, that is a power cycle.
    powerCycle: () => monitorCommand(vm.monitor, 'system_reset'),
  };
}
