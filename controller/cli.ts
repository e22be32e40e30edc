#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from '../builder/build.js';
import { RambootError, UsageError, describe } from '../lib/errors.js';
import { formatDisk } from '../vm/format.js';
import { runVm } from './verbs/vm.js';
import { initRepo } from './init.js';
import { stateDir } from './state.js';
import { up } from './up.js';
import { secretsCommand } from './verbs/secrets.js';
import { bootloaderCommand, deployCommand, statusCommand } from './verbs/deploy.js';

// The ramboot command: one verb per step of the pipeline, each usable on its own.

const USAGE = `usage: ramboot <command> [options]

  init DIR [--distro alpine|debian]          scaffold a machine repository and its secrets
  build [--repo DIR] [--rev REV | --dir DIR] [--json]
                                             build an image from a commit (default HEAD)
  format --disk FILE --image IMAGEDIR        make a boot medium disk image, image in lts
  vm --disk FILE [--ssh-port N] [--http-port N]
                                             boot a disk image on the virtual NAS (qemu)
  up [--repo DIR] [--init alpine|debian]     build HEAD and boot it (virtual NAS when no host);
                                             --init scaffolds the repository when it is missing
  deploy [--image IMAGEDIR] [--host NAME]    trial-boot the image (default: build HEAD), promote or roll back
  status [--host NAME] [--json]              running build, lts/old/new, last verdict
  bootloader install [--host NAME]           install extlinux and the managed syslinux.cfg on the medium
  secrets add|edit|list|rekey|rotate|check|hostkey …
                                             manage the age-encrypted secrets

common options: --repo DIR (default .), --state DIR (default REPO/.ramboot), --identity FILE
machine options (deploy, status, bootloader): --host NAME, --address A, --port N, --host-key LINE
`;

type Handler = (args: string[]) => Promise<number>;

/** Options naming the machine: --address/--port override ramboot.yaml (e.g. the virtual NAS's forwarded port). */
const machine = {
  host: { type: 'string' },
  'host-key': { type: 'string' },
  address: { type: 'string' },
  port: { type: 'string' },
} satisfies ParseArgsConfig['options'];

function target(values: { address?: string; port?: string }): { address?: string; port?: number } {
  return { address: values.address, port: values.port ? Number(values.port) : undefined };
}

const common = {
  repo: { type: 'string', default: '.' },
  state: { type: 'string' },
  identity: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

function parse<O extends ParseArgsConfig['options']>(args: string[], options: O, positionals = false) {
  try {
    return parseArgs({ args, options: { ...common, ...options }, allowPositionals: positionals, strict: true });
  } catch (err) {
    throw new UsageError(`${describe(err)}\n\n${USAGE}`, { step: 'parse arguments' });
  }
}

const commands: Record<string, Handler> = {
  async init(args) {
    const { values, positionals } = parse(args, { distro: { type: 'string', default: 'alpine' } }, true);
    if (positionals.length !== 1) throw new UsageError(`init takes one directory\n\n${USAGE}`, { step: 'parse arguments' });
    await initRepo({ dir: resolve(positionals[0]!), distro: distroFlag(values.distro as string), identity: values.identity });
    return 0;
  },

  async build(args) {
    const { values } = parse(args, { rev: { type: 'string' }, dir: { type: 'string' }, images: { type: 'string' }, json: { type: 'boolean' } });
    const repoDir = resolve(values.repo!);
    const r = await build({
      repoDir,
      rev: values.rev,
      dir: values.dir ? resolve(values.dir) : undefined,
      stateDir: stateDir(values.state, repoDir),
      imagesDir: values.images ? resolve(values.images) : undefined,
      identity: values.identity,
    });
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ buildId: r.buildId, imageDir: r.imageDir, segments: r.manifest.segments, kernel: r.manifest.kernel, stageReused: r.stageReused, baseReused: r.baseReused })}\n`);
    } else {
      process.stdout.write(`${r.imageDir}\n`);
    }
    return 0;
  },

  async format(args) {
    const { values } = parse(args, { disk: { type: 'string' }, image: { type: 'string' }, size: { type: 'string' } });
    if (!values.disk || !values.image) throw new UsageError(`format needs --disk FILE and --image IMAGEDIR\n\n${USAGE}`, { step: 'parse arguments' });
    await formatDisk({ disk: resolve(values.disk), imageDir: resolve(values.image), sizeMiB: values.size ? Number(values.size) : undefined });
    return 0;
  },

  async vm(args) {
    const { values } = parse(args, {
      disk: { type: 'string' },
      'ssh-port': { type: 'string', default: '2222' },
      'http-port': { type: 'string', default: '8080' },
      'serial-log': { type: 'string' },
      accel: { type: 'string', default: 'tcg' },
    });
    if (!values.disk) throw new UsageError(`vm needs --disk FILE\n\n${USAGE}`, { step: 'parse arguments' });
    return runVm({
      disk: resolve(values.disk),
      sshPort: Number(values['ssh-port']),
      httpPort: Number(values['http-port']),
      serialLog: resolve(values['serial-log'] ?? `${values.disk}.serial.log`),
      accel: values.accel === 'kvm' ? 'kvm' : 'tcg',
    });
  },

  async up(args) {
    const { values } = parse(args, { 'ssh-port': { type: 'string', default: '2222' }, 'http-port': { type: 'string', default: '8080' }, init: { type: 'string' } });
    const repoDir = resolve(values.repo!);
    if (values.init && !existsSync(join(repoDir, 'ramboot.yaml'))) {
      await initRepo({ dir: repoDir, distro: distroFlag(values.init), identity: values.identity });
    }
    return up({ repoDir, stateDir: stateDir(values.state, repoDir), identity: values.identity, sshPort: Number(values['ssh-port']), httpPort: Number(values['http-port']) });
  },

  async deploy(args) {
    const { values } = parse(args, { image: { type: 'string' }, force: { type: 'boolean' }, ...machine });
    const repoDir = resolve(values.repo!);
    const state = stateDir(values.state, repoDir);
    return deployCommand({
      repo: repoDir,
      host: values.host,
      stateDir: join(state, 'state'),
      identity: values.identity,
      hostKey: values['host-key'],
      ...target(values),
      image: values.image,
      force: values.force,
      build: async (repo) => (await build({ repoDir: repo, stateDir: state })).imageDir,
    });
  },

  async status(args) {
    const { values } = parse(args, { json: { type: 'boolean' }, ...machine });
    const repoDir = resolve(values.repo!);
    return statusCommand({ ...target(values), repo: repoDir, host: values.host, stateDir: join(stateDir(values.state, repoDir), 'state'), identity: values.identity, hostKey: values['host-key'], json: values.json });
  },

  async bootloader(args) {
    const [verb, ...rest] = args;
    if (verb !== 'install') throw new UsageError(`bootloader takes one verb: install\n\n${USAGE}`, { step: 'parse arguments' });
    const { values } = parse(rest, machine);
    const repoDir = resolve(values.repo!);
    return bootloaderCommand({ ...target(values), repo: repoDir, host: values.host, stateDir: join(stateDir(values.state, repoDir), 'state'), identity: values.identity, hostKey: values['host-key'] });
  },

  async secrets(args) {
    const { repo, rest } = takeRepoFlag(args);
    return secretsCommand(rest, { repoDir: resolve(repo), stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env });
  },
};

function distroFlag(value: string): 'alpine' | 'debian' {
  if (value !== 'alpine' && value !== 'debian') throw new UsageError(`--distro must be alpine or debian, not "${value}"`, { step: 'parse arguments' });
  return value;
}

/** The secrets verbs parse their own flags; --repo is the one they share with the rest. */
function takeRepoFlag(args: string[]): { repo: string; rest: string[] } {
  const i = args.indexOf('--repo');
  if (i >= 0) return { repo: args[i + 1] ?? '.', rest: [...args.slice(0, i), ...args.slice(i + 2)] };
  return { repo: '.', rest: args };
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const handler = commands[cmd];
  if (!handler) {
    process.stderr.write(`ramboot: unknown command "${cmd}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await handler(rest);
  } catch (err) {
    process.stderr.write(`\nramboot ${cmd}: ${describe(err)}\n`);
    if (!(err instanceof RambootError)) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
