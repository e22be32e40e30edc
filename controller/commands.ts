import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build, requireRoot } from '../builder/build.js';
import { ArgumentError } from '../lib/errors.js';
import { formatDisk } from '../vm/format.js';
import { verb, type Verb } from './args.js';
import { dispatch, type CliIO } from './dispatch.js';
import { initRepo } from './init.js';
import { interruptible } from './interrupt.js';
import { openMachine } from './machine.js';
import { modeFor, renderer } from './render.js';
import { up } from './up.js';
import { bootloaderCommand, deployCommand, statusCommand } from './verbs/deploy.js';
import { secretsVerbs } from './verbs/secrets.js';
import { runVm } from './verbs/vm.js';

// The ramboot command: one verb per step of the pipeline, each usable on its own, and
// `up`, the controller that runs them all. This table is the whole command line: the
// parser, `ramboot --help` and `ramboot VERB --help` are made from it (args.ts).

/** The streams and environment of one run of the command: the process's, or a test's. */
export interface Io extends CliIO {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: Record<string, string | undefined>;
}

const repo = { type: 'string', value: 'DIR', default: '.', help: 'the machine\'s repository' } as const;
const state = { type: 'string', value: 'DIR', help: 'the machine\'s state directory (default /var/lib/ramboot/HOST-ID, caches in /var/cache/ramboot; also $RAMBOOT_STATE)' } as const;
const identity = { type: 'string', value: 'FILE', help: 'the controller\'s age identity (default $RAMBOOT_IDENTITY, then secrets.identity)' } as const;
const json = { type: 'boolean', help: 'progress as JSON lines (one event per line) on stderr' } as const;
/** Options naming the machine: they override ramboot.yaml's host (e.g. the virtual NAS's forwarded port). */
const machine = {
  host: { type: 'string', value: 'NAME', help: 'the host ramboot.yaml describes (a check)' },
  address: { type: 'string', value: 'ADDR', help: 'reach the machine here instead of host.address' },
  port: { type: 'number', min: 1, max: 65535, help: 'SSH port instead of host.port' },
  'ssh-key': { type: 'string', value: 'FILE', help: 'the controller\'s SSH key (default host.identity, then ~/.ssh/id_ed25519)' },
  'host-key': { type: 'string', value: 'LINE', help: 'the machine\'s public host key to pin, when no deploy recorded one' },
} as const;
export function commands(io: Io): Verb[] {
  const progress = (o: { json?: boolean }) => renderer(modeFor(io.stderr, !!o.json), io.stderr);
  return [
  verb({
    name: 'init',
    summary: 'scaffold a machine repository: template, age identity, SSH host key and authorized_keys secrets, first commit',
    args: [{ name: 'DIR', help: 'a new or empty directory' }],
    options: { distro: { type: 'string', choices: ['alpine', 'debian'], default: 'alpine', help: 'Alpine (the template) or Debian (the example)' }, identity },
    run: async (o, [dir]) => {
      await initRepo({ dir: resolve(dir!), distro: o.distro, identity: o.identity });
      return 0;
    },
  }),
  verb({
    name: 'build',
    summary: 'build an image from a commit (default HEAD) or a directory; prints the image directory',
    options: {
      repo,
      rev: { type: 'string', value: 'REV', help: 'the commit, branch or tag to build (default HEAD)' },
      dir: { type: 'string', value: 'DIR', help: 'build this directory instead of a commit' },
      state,
      images: { type: 'string', value: 'DIR', help: 'publish the image here instead of the state directory' },
      identity,
      json: { type: 'boolean', help: 'progress as JSON lines on stderr; the result as JSON on stdout' },
    },
    run: async (o) => {
      requireRoot();
      const m = await openMachine({ repo: o.repo, rev: o.rev, dir: o.dir, state: o.state });
      if (m.notice) io.stderr.write(`${m.notice}\n`);
      const r = progress(o);
      const b = await interruptible((signal) =>
        build({
          repoDir: m.repo,
          rev: o.rev,
          dir: o.dir && resolve(o.dir),
          imagesDir: o.images ? resolve(o.images) : m.state.images,
          cacheDir: m.state.cache,
          origin: m.origin,
          identity: o.identity,
          emit: r.emit,
          signal,
        }),
      );
      r.end();
      const result = { buildId: b.buildId, imageDir: b.imageDir, segments: b.manifest.segments, kernel: b.manifest.kernel, stageReused: b.stageReused, baseReused: b.baseReused };
      io.stdout.write(o.json ? `${JSON.stringify(result)}\n` : `${b.imageDir}\n`);
      return 0;
    },
  }),
  verb({
    name: 'format',
    summary: 'make a boot medium disk image (FAT, syslinux, the image in lts)',
    options: {
      disk: { type: 'string', value: 'FILE', help: 'the disk image to write (replaced)' },
      image: { type: 'string', value: 'DIR', help: 'the image directory to put in lts' },
      size: { type: 'number', value: 'MIB', min: 64, help: 'size in MiB (default: room for four images)' },
      json,
    },
    run: async (o) => {
      if (!o.disk || !o.image) throw new ArgumentError('ramboot format: needs --disk FILE and --image DIR', 'format');
      const r = progress(o);
      await formatDisk({ disk: resolve(o.disk), imageDir: resolve(o.image), sizeMiB: o.size, emit: r.emit });
      return 0;
    },
  }),
  verb({
    name: 'vm',
    summary: 'boot a disk image on the virtual NAS (qemu), as the machine would boot it',
    options: {
      disk: { type: 'string', value: 'FILE', help: 'a disk made by `ramboot format`' },
      'ssh-port': { type: 'number', min: 1, max: 65535, default: 2222, help: 'loopback port forwarded to the guest\'s SSH' },
      'http-port': { type: 'number', min: 1, max: 65535, default: 8080, help: 'loopback port forwarded to the guest\'s port 80' },
      'serial-log': { type: 'string', value: 'FILE', help: 'where the serial console goes (default DISK.serial.log)' },
      accel: { type: 'string', choices: ['tcg', 'kvm'], default: 'tcg', help: 'qemu accelerator' },
      memory: { type: 'number', value: 'MIB', min: 256, default: 1536, help: 'guest RAM' },
      json,
    },
    run: async (o) => {
      if (!o.disk) throw new ArgumentError('ramboot vm: needs --disk FILE', 'vm');
      const disk = resolve(o.disk);
      return runVm(
        { disk, sshPort: o['ssh-port'], httpPort: o['http-port'], serialLog: resolve(o['serial-log'] ?? `${disk}.serial.log`), accel: o.accel, memoryMiB: o.memory },
        progress(o),
        io.stdout,
      );
    },
  }),
  verb({
    name: 'up',
    summary: 'the controller: bring the machine to the newest commit and keep it there (the virtual NAS when no host.address)',
    options: {
      repo,
      init: { type: 'string', choices: ['alpine', 'debian'], help: 'scaffold the repository first when it has no ramboot.yaml' },
      state,
      identity,
      'ssh-port': { type: 'number', min: 1, max: 65535, default: 2222, help: 'the virtual NAS\'s loopback SSH port' },
      'http-port': { type: 'number', min: 1, max: 65535, default: 8080, help: 'the virtual NAS\'s loopback HTTP port' },
      json,
    },
    run: async (o) => {
      const repoDir = resolve(o.repo);
      if (o.init && !existsSync(join(repoDir, 'ramboot.yaml'))) await initRepo({ dir: repoDir, distro: o.init, identity: o.identity });
      return up({ repoDir, state: o.state, identity: o.identity, sshPort: o['ssh-port'], httpPort: o['http-port'], render: progress(o) });
    },
  }),
  verb({
    name: 'deploy',
    summary: 'trial-boot an image (default: build HEAD) in the boot-once slot; promote it if healthy, roll back otherwise',
    details: 'The exit code is the verdict: 0 promoted, 10 build failed, 11 upload failed, 12 trial not healthy, 13 trial unreachable, 20 incomplete (run again to resume).',
    options: {
      image: { type: 'string', value: 'DIR', help: 'the image directory to deploy (default: build the commit)' },
      repo,
      rev: { type: 'string', value: 'REV', help: 'the commit to build when no --image (default HEAD)' },
      force: { type: 'boolean', help: 'deploy a build that was rolled back before' },
      state,
      identity,
      ...machine,
      json,
    },
    run: (o) =>
      interruptible((signal) =>
        deployCommand({ ...o, identity: o.identity, hostKey: o['host-key'], address: o.address, port: o.port, signal, stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
      ),
  }),
  verb({
    name: 'status',
    summary: 'the running build, the builds in lts, old and new, the last verdict',
    options: { repo, state, ...machine, json: { type: 'boolean', help: 'the report as JSON' } },
    run: (o) => statusCommand({ ...o, hostKey: o['host-key'], stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
  }),
  verb({
    name: 'bootloader install',
    summary: 'install extlinux and the managed syslinux.cfg on the machine\'s medium, adopting a reference-NAS layout',
    options: { repo, state, ...machine },
    run: (o) => bootloaderCommand({ ...o, hostKey: o['host-key'], stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
  }),
  ...secretsVerbs((repoDir) => ({ repoDir, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, env: io.env })),
  ];
}

function sshKey(o: { 'ssh-key'?: string }): { sshKey?: string } {
  return o['ssh-key'] ? { sshKey: resolve(o['ssh-key']) } : {};
}

const EXIT_CODES = `exit codes: 0 ok (promoted, no change), 1 failed (the message says what and where), 2 plan found changes,
  10 build failed, 11 upload failed, 12 trial not healthy, 13 trial unreachable, 20 deploy incomplete,
  64 wrong command line, 75 unreachable: retry later, 130/143 interrupted
`;

/** Runs `ramboot ARGV…` with these streams; returns the exit code. */
export function runCli(argv: string[], io: Io): Promise<number> {
  return dispatch(commands(io), argv, io, EXIT_CODES);
}
