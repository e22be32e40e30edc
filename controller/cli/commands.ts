import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build, requireRoot } from '../../builder/build.js';
import { ArgumentError, EXIT, UsageError } from '../../lib/errors.js';
import { RAMBOOT_VERSION } from '../../lib/package.js';
import { callController, findController, type Api } from '../client.js';
import { History, type ReconcileRecord } from '../history.js';
import { installHooks, postReceive, preReceive } from '../hooks.js';
import { formatDisk } from '../../vm/format.js';
import { verb, type Rows, type Verb } from './args.js';
import { dispatch, type CliIO } from './dispatch.js';
import { initRepo } from './init.js';
import { interruptible } from '../interrupt.js';
import { openMachine } from '../open-machine.js';
import { machineState, originOf } from '../state.js';
import { modeFor, renderer } from '../render.js';
import { up } from './up.js';
import { bootloaderCommand, deployCommand, scrubCommand, statusCommand } from './verbs/deploy.js';
import { enrollCommand } from './verbs/enroll.js';
import { planVerbs } from './verbs/plan.js';
import { publishCommand } from './verbs/publish.js';
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
const state = { type: 'string', value: 'DIR', help: 'the machine\'s state directory (default /var/lib/ramboot/REPOSITORY-ID, caches in /var/cache/ramboot; also $RAMBOOT_STATE)' } as const;
const identity = { type: 'string', value: 'FILE', help: 'the controller\'s age identity (default $RAMBOOT_IDENTITY, then secrets.identity)' } as const;
const json = { type: 'boolean', help: 'progress as JSON lines (one event per line) on stderr' } as const;
const registryLoginOption = { type: 'string', value: 'FILE', help: 'USER:TOKEN for a registry that asks for a login, in a file only its owner reads (else $RAMBOOT_REGISTRY_USERNAME and $RAMBOOT_REGISTRY_PASSWORD)' } as const;
/** Options naming the machine: they override ramboot.yaml's host (e.g. the virtual NAS's forwarded port). */
const machineOption = { type: 'string', value: 'NAME', help: 'the machine, in a repository that describes several (machines/NAME/)' } as const;
const machine = {
  machine: machineOption,
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
      machine: machineOption,
      state,
      images: { type: 'string', value: 'DIR', help: 'publish the image here instead of the state directory' },
      fresh: { type: 'boolean', help: 'install the packages anew instead of reusing the cached package stage (picks up the distribution\'s updates)' },
      identity,
      json: { type: 'boolean', help: 'progress as JSON lines on stderr; the result as JSON on stdout' },
    },
    run: async (o) => {
      requireRoot();
      const m = await openMachine({ repo: o.repo, rev: o.rev, dir: o.dir, machine: o.machine, state: o.state });
      if (m.notice) io.stderr.write(`${m.notice}\n`);
      const r = progress(o);
      const b = await interruptible((signal) =>
        build({
          repoDir: m.repo,
          rev: o.rev,
          dir: o.dir && resolve(o.dir),
          machine: o.machine,
          imagesDir: o.images ? resolve(o.images) : m.state.images,
          cacheDir: m.state.cache,
          origin: m.origin,
          identity: o.identity,
          fresh: o.fresh,
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
    summary: 'make a boot medium disk image (FAT with syslinux, or GPT with an EFI system partition and systemd-boot; the image in lts)',
    options: {
      disk: { type: 'string', value: 'FILE', help: 'the disk image to write (replaced)' },
      image: { type: 'string', value: 'DIR', help: 'the image directory to put in lts' },
      size: { type: 'number', value: 'MIB', min: 64, help: 'size in MiB (default: room for four images)' },
      firmware: { type: 'string', choices: ['bios', 'uefi'], default: 'bios', help: 'the machine\'s firmware: bios (syslinux) or uefi (systemd-boot)' },
      json,
    },
    run: async (o) => {
      if (!o.disk || !o.image) throw new ArgumentError('ramboot format: needs --disk FILE and --image DIR', 'format');
      const r = progress(o);
      await formatDisk({ disk: resolve(o.disk), imageDir: resolve(o.image), sizeMiB: o.size, firmware: o.firmware, emit: r.emit });
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
      firmware: { type: 'string', choices: ['bios', 'uefi'], help: 'SeaBIOS or OVMF (default: what the disk is laid out for)' },
      memory: { type: 'number', value: 'MIB', min: 256, default: 1536, help: 'guest RAM' },
      monitor: { type: 'string', value: 'SOCKET', help: 'qemu\'s monitor on this unix socket (the network cable, the power)' },
      'serial-socket': { type: 'string', value: 'SOCKET', help: 'type at the serial console through this unix socket (its output still goes to the log)' },
      tpm: { type: 'boolean', help: 'a TPM 2.0 (swtpm), its state kept beside the disk in DISK.tpm/ (secrets.at_rest: tpm)' },
      json,
    },
    run: async (o) => {
      if (!o.disk) throw new ArgumentError('ramboot vm: needs --disk FILE', 'vm');
      const disk = resolve(o.disk);
      return runVm(
        { disk, sshPort: o['ssh-port'], httpPort: o['http-port'], serialLog: resolve(o['serial-log'] ?? `${disk}.serial.log`), accel: o.accel, firmware: o.firmware, memoryMiB: o.memory, monitor: o.monitor && resolve(o.monitor), serialSocket: o['serial-socket'] && resolve(o['serial-socket']), tpm: !!o.tpm },
        progress(o),
        io.stdout,
      );
    },
  }),
  verb({
    name: 'up',
    summary: 'the controller: bring the machine to the newest commit of the branch and keep it there (the virtual NAS when no host.address)',
    details:
      'Follows a local repository (--repo: a working tree, or the bare repository people push to) or an HTTP(S) remote (--url, ' +
      'polled on watch.poll). Serves the JSON API on --listen (loopback by default; anywhere else every request needs the token).',
    options: {
      repo,
      url: { type: 'string', value: 'URL', help: 'follow this HTTP(S) remote instead of a local repository (credentials never in the URL: see --credentials)' },
      credentials: { type: 'string', value: 'FILE', help: 'USER:TOKEN for --url, in a file only root can read (else $RAMBOOT_GIT_USERNAME and $RAMBOOT_GIT_PASSWORD, else git\'s credential helper)' },
      'allow-http': { type: 'boolean', help: 'follow a plain http:// --url without signed commits (anyone on the path can change the machine)' },
      branch: { type: 'string', value: 'NAME', help: 'the branch to follow (default: the one followed before, else watch.branch of a trusted head, else main)' },
      registry: { type: 'string', value: 'REF', help: 'a site controller: follow this registry tag (`ramboot publish`), pull each new image and deploy it; it never builds' },
      'registry-login': registryLoginOption,
      init: { type: 'string', choices: ['alpine', 'debian'], help: 'scaffold the repository first when it has no ramboot.yaml' },
      listen: { type: 'string', value: 'HOST:PORT', default: '127.0.0.1:8180', help: 'where the API listens' },
      'token-file': { type: 'string', value: 'FILE', help: 'the API token (default: made once, in the state directory)' },
      'webhook-secret': { type: 'string', value: 'FILE', help: 'the forges\' webhook secret (also $RAMBOOT_WEBHOOK_SECRET)' },
      signers: { type: 'string', value: 'FILE', help: 'require commits signed by a key of this allowed-signers file (kept across restarts; `none` turns signing off)' },
      state,
      identity,
      'ssh-port': { type: 'number', min: 1, max: 65535, default: 2222, help: 'the virtual NAS\'s loopback SSH port' },
      'http-port': { type: 'number', min: 1, max: 65535, default: 8080, help: 'the virtual NAS\'s loopback HTTP port' },
      json,
    },
    run: async (o) => {
      const repoDir = resolve(o.repo);
      if (o.init && !o.url && !o.registry && !existsSync(join(repoDir, 'ramboot.yaml'))) await initRepo({ dir: repoDir, distro: o.init, identity: o.identity });
      return up({
        repo: o.url ? undefined : repoDir,
        url: o.url,
        credentials: o.credentials,
        allowHttp: o['allow-http'],
        registry: o.registry,
        registryLogin: o['registry-login'],
        branch: o.branch,
        state: o.state,
        identity: o.identity,
        sshPort: o['ssh-port'],
        httpPort: o['http-port'],
        listen: hostPort(o.listen),
        tokenFile: o['token-file'],
        webhookSecretFile: o['webhook-secret'],
        signers: o.signers,
        render: progress(o),
        stdout: io.stdout,
      });
    },
  }),
  verb({
    name: 'reconcile',
    summary: 'ask the running controller to reconcile the branch now',
    options: { repo, state },
    run: async (o) => {
      const r = await callController<{ commit?: string; queued?: string; error?: string }>(controllerOf(o), 'POST', '/api/reconcile');
      io.stdout.write(r.error ? `the controller could not read the branch: ${r.error}\n` : `${r.commit?.slice(0, 12)}: ${r.queued}\n`);
      return r.error ? EXIT.FAILED : EXIT.OK;
    },
  }),
  verb({
    name: 'release',
    summary: 'lift the quarantine of a commit (a failed build, a rolled-back trial) and deploy it',
    args: [{ name: 'COMMIT', help: 'the commit id (7 characters or more)' }],
    options: { repo, state },
    run: async (o, [commit]) => {
      const r = await callController<{ released: { commit: string; outcome: string }[] }>(controllerOf(o), 'POST', `/api/release/${encodeURIComponent(commit!)}`);
      if (r.released.length === 0) {
        io.stderr.write(`ramboot release: ${commit} is not quarantined\n`);
        return EXIT.FAILED;
      }
      for (const q of r.released) io.stdout.write(`released ${q.commit.slice(0, 12)} (was ${q.outcome}); deploying it\n`);
      return EXIT.OK;
    },
  }),
  verb({
    name: 'history',
    summary: 'the reconciles of the machine, newest first: commit, trigger, outcome, reason',
    options: { repo, state, machine: machineOption, limit: { type: 'number', min: 1, default: 20, help: 'how many' }, json: { type: 'boolean', help: 'the records as JSON' } },
    run: async (o) => {
      const m = await openMachine({ repo: o.repo, machine: o.machine, state: o.state });
      if (m.notice) io.stderr.write(`${m.notice}\n`);
      const records = new History(m.state.dir, Number.MAX_SAFE_INTEGER).list(o.limit);
      io.stdout.write(o.json ? `${JSON.stringify(records, null, 2)}\n` : formatHistory(records));
      return EXIT.OK;
    },
  }),
  verb({
    name: 'hook install',
    summary: 'install ramboot\'s pre-receive and post-receive hooks in the bare repository the controller follows',
    args: [{ name: 'BARE_REPO', help: 'the bare repository people push to' }],
    options: {
      branch: { type: 'string', value: 'NAME', default: 'main', help: 'the branch the controller follows' },
      signers: { type: 'string', value: 'FILE', help: 'the allowed-signers file the controller was started with' },
      state,
    },
    run: async (o, [bare]) => {
      const files = await installHooks(bare!, { branch: o.branch, state: o.state, signers: o.signers });
      io.stdout.write(`installed ${files.join(', ')}; pushes to ${o.branch} are gated and show the deploy (git push -o ramboot.wait=false skips waiting)\n`);
      return EXIT.OK;
    },
  }),
  verb({
    name: 'hook pre-receive',
    summary: 'the push gate (run by git): signature policy, ramboot.yaml valid, secrets decrypt',
    options: { repo, branch: { type: 'string', value: 'NAME', default: 'main', help: 'the branch' }, signers: { type: 'string', value: 'FILE', help: 'allowed signers' }, state },
    run: async (o) => {
      const problems = await preReceive(resolve(o.repo), await readAll(io.stdin), { branch: o.branch, state: o.state, signers: o.signers }, io.env as NodeJS.ProcessEnv);
      for (const p of problems) io.stderr.write(`ramboot: refusing the push: ${p}\n`);
      return problems.length > 0 ? EXIT.FAILED : EXIT.OK;
    },
  }),
  verb({
    name: 'hook post-receive',
    summary: 'the deploy\'s progress in `git push` output (run by git)',
    options: { repo, branch: { type: 'string', value: 'NAME', default: 'main', help: 'the branch' }, signers: { type: 'string', value: 'FILE', help: 'allowed signers' }, state },
    run: async (o) => postReceive(resolve(o.repo), await readAll(io.stdin), { branch: o.branch, state: o.state }, io.env as NodeJS.ProcessEnv, io.stderr),
  }),
  verb({
    name: 'deploy',
    summary: 'trial-boot an image (default: build HEAD) in the boot-once slot; promote it if healthy, roll back otherwise',
    details: 'The exit code is the verdict: 0 promoted, 10 build failed, 11 upload failed, 12 trial not healthy, 13 trial unreachable, 14 boot medium damaged beyond repair (no label changed), 20 incomplete (run again to resume).',
    options: {
      image: { type: 'string', value: 'DIR', help: 'the image directory to deploy (default: build the commit)' },
      registry: { type: 'string', value: 'REF', help: 'pull the image from this OCI registry reference (`ramboot publish`) instead of building' },
      'registry-login': registryLoginOption,
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
        deployCommand({ ...o, identity: o.identity, registryLogin: o['registry-login'], hostKey: o['host-key'], address: o.address, port: o.port, signal, stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
      ),
  }),
  verb({
    name: 'publish',
    summary: 'push an image (default: build HEAD) to an OCI registry, its secrets sealed to the repository\'s recipients',
    details:
      'A site controller follows it with `ramboot up --registry REF` (or deploys it once with `ramboot deploy --registry REF`), fetching only the files it lacks. ' +
      'In a repository of several machines and without --machine, each machine goes to HOST/NAME/MACHINE:TAG. Loopback registries are spoken to over http, others over https.',
    options: {
      registry: { type: 'string', value: 'REF', help: 'where to push: HOST[:PORT]/NAME[:TAG] (tag default latest)' },
      'registry-login': registryLoginOption,
      image: { type: 'string', value: 'DIR', help: 'the image directory to push (default: build the commit)' },
      repo,
      rev: { type: 'string', value: 'REV', help: 'the commit to build when no --image (default HEAD)' },
      machine: machineOption,
      state,
      identity,
      json,
    },
    run: (o) => {
      if (!o.registry) throw new ArgumentError('ramboot publish: needs --registry HOST[:PORT]/NAME[:TAG]', 'publish');
      return interruptible((signal) =>
        publishCommand({ repo: o.repo, rev: o.rev, machine: o.machine, image: o.image, state: o.state, identity: o.identity, registry: o.registry!, loginFile: o['registry-login'], render: progress(o), stdout: io.stdout, signal }),
      );
    },
  }),
  verb({
    name: 'status',
    summary: 'the running build, the builds in lts, old and new, the last verdict',
    options: { repo, state, ...machine, json: { type: 'boolean', help: 'the report as JSON' } },
    run: (o) => statusCommand({ ...o, hostKey: o['host-key'], stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
  }),
  verb({
    name: 'scrub',
    summary: 'hash every file the medium\'s labels name and report damage per label; --repair replaces it from the controller\'s images',
    options: { repo, state, repair: { type: 'boolean', help: 'replace damaged files from the controller\'s images' }, ...machine, json: { type: 'boolean', help: 'the report as JSON' } },
    run: (o) => scrubCommand({ ...o, hostKey: o['host-key'], stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
  }),
  verb({
    name: 'bootloader install',
    summary: 'install extlinux and the managed syslinux.cfg on the machine\'s medium, adopting a reference-NAS layout',
    options: { repo, state, ...machine },
    run: (o) => bootloaderCommand({ ...o, hostKey: o['host-key'], stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
  }),
  verb({
    name: 'secrets enroll',
    summary: 'seal a new key to the running machine\'s TPM, record its recipient in tpm/ and set secrets.at_rest: tpm (a commit)',
    details:
      'Runs on the machine over SSH: the key is made and sealed there, in RAM; only its public recipient and the TPM-wrapped object come back. ' +
      'Enrolling again (a new board, a cleared TPM) replaces both. A machine in a recovery boot presents a recovery host key: pass it with --host-key.',
    options: { repo, state, ...machine },
    run: (o) => enrollCommand({ ...o, hostKey: o['host-key'], stdout: io.stdout, stderr: io.stderr, ...sshKey(o) }),
  }),
  ...planVerbs(io),
  ...secretsVerbs((repoDir) => ({ repoDir, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, env: io.env })),
  ];
}

/**
 * The controller of the repository (of its one machine, or of all of them); fails with a
 * clear message when none runs. Its state directory follows from the repository's path
 * alone, as `ramboot up` names it.
 */
function controllerOf(o: { repo: string; state?: string }): Api {
  const repo = resolve(o.repo);
  const state = machineState({ state: o.state, origin: originOf(repo), workTree: existsSync(join(repo, '.git')) ? repo : undefined });
  const api = findController(state);
  if (!api) throw new UsageError(`no controller runs for ${repo} (state ${state.dir}); start one with \`ramboot up --repo ${repo}\``, { step: 'find controller' });
  return api;
}

function hostPort(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m || Number(m[3]) > 65535) throw new ArgumentError(`ramboot up: --listen must be HOST:PORT (e.g. 127.0.0.1:8180), not "${listen}"`, 'up');
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString();
}

function formatHistory(records: ReconcileRecord[]): string {
  if (records.length === 0) return 'no reconciles yet\n';
  return `${records
    .map((r) => {
      const took = r.startedAt && r.endedAt ? ` in ${Math.round((Date.parse(r.endedAt) - Date.parse(r.startedAt)) / 1000)} s` : '';
      return `${r.id}  ${r.commit.slice(0, 12)}  ${(r.outcome ?? r.state).padEnd(18)} ${r.trigger.kind.padEnd(8)} ${r.subject ?? ''}${took}\n    ${r.message ?? ''}`;
    })
    .join('\n')}\n`;
}

function sshKey(o: { 'ssh-key'?: string }): { sshKey?: string } {
  return o['ssh-key'] ? { sshKey: resolve(o['ssh-key']) } : {};
}

/** `ramboot --help`'s exit codes: README's table, shorter (test/controller/cli.test.ts holds them together). */
const EXIT_CODES: Rows = [
  ['0', 'done (deploy: promoted; plan: no change)'],
  ['1', 'failed, or something needs a person: the message says what and where'],
  ['2', 'plan: the change alters the machine'],
  ['10', 'deploy: build failed'],
  ['11', 'deploy: upload failed (nothing changed on the machine)'],
  ['12', 'deploy: trial not healthy (rolled back)'],
  ['13', 'deploy: trial unreachable (rolled back)'],
  ['14', 'deploy, scrub --repair: the boot medium is damaged beyond repair'],
  ['20', 'deploy incomplete: run ramboot deploy again to resume it'],
  ['64', 'the command line is wrong (an unknown verb or option, a bad value)'],
  ['75', 'unreachable (a remote, a mirror): nothing changed, try again later'],
  ['130, 143', 'interrupted (SIGINT, SIGTERM); what the work made is cleaned up'],
];

/** Runs `ramboot ARGV…` with these streams; returns the exit code. */
export function runCli(argv: string[], io: Io): Promise<number> {
  return dispatch(commands(io), argv, io, { version: RAMBOOT_VERSION, exitCodes: EXIT_CODES });
}
