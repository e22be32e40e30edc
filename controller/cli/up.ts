import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as fs from 'node:fs';
import git from 'isomorphic-git';
import cron from 'node-cron';
import { build } from '../../builder/build.js';
import { gitSource, listMachines } from '../../builder/source.js';
import { fingerprint } from '../../secrets/ssh-public.js';
import { backoffMs, type Backoff } from '../../lib/backoff.js';
import { RambootError, UsageError, describe } from '../../lib/errors.js';
import { redactUrl } from '../../lib/net.js';
import { makePrivateDir, readPrivateFile, writePrivateFile } from '../../lib/private-file.js';
import type { Config } from '../../lib/config-schema.js';
import type { LocalSettings } from '../../deploy/target.js';
import { Controller, runningBuild, type AnyEvent } from '../controller.js';
import { onStopSignal, signalExitCode } from '../interrupt.js';
import { Metrics } from '../metrics.js';
import { Notifier } from '../notify/notifier.js';
import { Live } from '../page/live.js';
import { MachineProbe, isDeploying, machineReach } from '../page/probe.js';
import { assetRoutes, pageRoutes } from '../page/routes.js';
import { renderFleet } from '../page/fleet.js';
import { Fleet } from '../fleet.js';
import type { FastifyInstance } from 'fastify';
import { configOf } from '../open-machine.js';
import type { Renderer } from '../render.js';
import { credentialsFor, isUrl, localRepo, remoteRepo, type Repo } from '../repo.js';
import { loadPersisted, savePersisted } from '../persisted.js';
import { verifyCommit } from '../signing.js';
import { startingPoint } from '../trust.js';
import { startServer, type MachineRoutes, type ServerOptions } from '../server.js';
import { cacheRoot, machineState, migrateLegacyState, originOf, type MachineState } from '../state.js';
import { startVirtualNas, type VirtualNas } from '../virtual-nas.js';
import { Site } from '../site.js';
import { manifestDigest, parseRef, repositoryOf } from '../../image/oci.js';
import { MANIFEST, readManifestSync, type Manifest } from '../../image/manifest.js';
import { pullImage, registryLogin } from './verbs/publish.js';

// `ramboot up`: the controller for one machine, the README's first command. It follows
// a branch (a local repository, or an HTTP(S) remote it polls), brings the machine to
// its newest commit and keeps it there, one reconcile at a time; it serves the API on
// loopback. With no host.address the machine is the virtual NAS, whose disk is kept in
// the state directory across runs.

export interface UpOptions {
  repo?: string;
  url?: string;
  branch?: string;
  state?: string;
  identity?: string;
  sshPort: number;
  httpPort: number;
  /** The API's address. */
  listen: { host: string; port: number };
  tokenFile?: string;
  webhookSecretFile?: string;
  /** An allowed-signers file, or `none` to turn signing off. */
  signers?: string;
  /** USER:TOKEN for --url. */
  credentials?: string;
  /** Follow a plain http:// remote without signing. */
  allowHttp?: boolean;
  /** A site controller: follow this registry tag (`ramboot publish`) instead of a branch, and never build. */
  registry?: string;
  /** --registry-login FILE: USER:TOKEN for a registry that asks for a login. */
  registryLogin?: string;
  render: Renderer;
  stdout: NodeJS.WritableStream;
}

/** How often a local repository's branch is looked at: cheap (one file), and noticed within seconds. */
const LOCAL_POLL_MS = 2_000;
const BOOT_DEADLINE_MS = 10 * 60_000;
/** On SIGTERM, how long the last notices (the interrupted verdict) may take to go out. */
const STOP_NOTIFY_GRACE_MS = 10_000;
/** An unreachable branch at start: asked again after 5 s, 10 s, 15 s, … then every minute. */
const HEAD_BACKOFF: Backoff = { firstMs: 5_000, maxMs: 60_000, stepMs: 5_000 };

export async function up(o: UpOptions): Promise<number> {
  const emit = (e: AnyEvent) => o.render.emit(e);
  if (o.registry) return upSite(o, emit);
  const opened = await openRepo(o, emit);
  const { repo, config, state, start, signers } = opened;
  const token = readOrMakeToken(state, o.tokenFile);
  const webhookSecret = o.webhookSecretFile ? readPrivateFile(resolve(o.webhookSecretFile), 'the webhook secret (--webhook-secret)').trim() : process.env.RAMBOOT_WEBHOOK_SECRET;
  const machines = await listMachines(await gitSource(repo.gitdir, start));
  if (machines.length > 0) return upFleet(o, opened, machines, { token, webhookSecret, emit });

  let nas: VirtualNas | undefined;
  let reach: () => LocalSettings = () => ({});
  if (!config.host.address) {
    const booted = await bootVirtualNas(state, emit, o, buildAt(o, repo, start, state, emit));
    nas = booted;
    reach = () => ({ address: '127.0.0.1', port: booted.record.sshPort, powerCycle: () => booted.powerCycle() });
  }

  const metrics = new Metrics();
  const ctrl = new Controller({ repo: metrics.countPolls(repo), state, identity: o.identity, reach, signers, branchGiven: !!o.branch, keep: config.watch.history, emit });
  await ctrl.recover();
  const { routes, notifier } = views(ctrl, metrics, { host: config.host.name, repo, state, reach, emit });
  const server = await startServer(ctrl, { host: o.listen.host, port: o.listen.port, token, webhookSecret, routes });
  const api = `http://${o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host}:${o.listen.port}`;
  writePrivateFile(join(state.dir, 'api.json'), `${JSON.stringify({ url: api, pid: process.pid }, null, 2)}\n`);

  const stopTriggers = watch(ctrl, repo, config);
  await ctrl.poll({ kind: 'start' }, true);
  o.render.end();
  o.stdout.write(
    `ramboot controls ${config.host.name} from ${repo.label} (branch ${repo.branch})\n` +
      `  status page: ${api}/   metrics: ${api}/metrics\n` +
      `  API: ${api}/api/status   (token in ${o.tokenFile ?? join(state.dir, 'api-token')})\n` +
      (webhookSecret ? `  webhook: POST ${api}/hooks/git\n` : '') +
      (nas ? `  the virtual NAS: ssh -p ${nas.record.sshPort}${config.host.identity ? ` -i ${config.host.identity}` : ''} root@127.0.0.1 (serial console ${nas.record.serialLog}); its status page http://127.0.0.1:${nas.record.httpPort}/\n` : '') +
      `  state: ${state.dir}\n`,
  );

  // Runs until a signal; the process ends in the stop.
  return new Promise<number>(() => {
    onStopSignal((signal) => {
      emit({ kind: 'stage', source: 'controller', message: `${signal}: stopping; a deploy in progress resumes at the next start` });
      stopTriggers();
      void (async () => {
        await ctrl.stop(signal);
        // The interrupted verdict (and what was still queued) goes out before the process ends.
        await notifier.settle(STOP_NOTIFY_GRACE_MS);
        await server.close();
        await nas?.stop();
        // A deploy in flight is cut here, as a crash would cut it: its journal resumes it.
        // The exit code says what stopped it, as the README's table does (the service files accept 143).
        process.exit(signalExitCode(signal));
      })();
    });
  });
}

interface Opened {
  repo: Repo;
  config: Config;
  state: MachineState;
  /** The trusted commit the controller starts from (the virtual NAS's first image). */
  start: string;
  signers?: string;
}

/**
 * The repository, its state directory and the trust settings, decided by how the
 * controller was started and by commits already verified (trust.ts), never by the head.
 */
async function openRepo(o: UpOptions, emit: (e: AnyEvent) => void): Promise<Opened> {
  if (o.url && o.repo && o.repo !== '.') throw new UsageError('ramboot up takes --repo DIR or --url URL, not both', { step: 'up' });
  const origin = originOf(o.url ?? resolve(o.repo ?? '.'));
  const workTree = !o.url && existsSync(join(resolve(o.repo ?? '.'), '.git')) ? resolve(o.repo ?? '.') : undefined;
  const state = machineState({ state: o.state, origin, workTree });
  makePrivateDir(state.dir);
  // As every verb that opens a repository (open-machine.ts): an earlier ramboot's REPO/.ramboot
  // is moved out before anything reads the journal or boots the virtual NAS's disk.
  if (workTree && !o.state && !process.env.RAMBOOT_STATE) {
    const host = await gitSource(workTree).then(configOf).then((c) => c.host.name, () => '');
    const notice = await migrateLegacyState(workTree, host, state);
    if (notice) emit({ kind: 'warn', source: 'controller', message: notice.replace(/^ramboot: /, '') });
  }
  const persisted = loadPersisted(state.dir);
  const signers = o.signers === 'none' ? undefined : o.signers ? resolve(o.signers) : persisted.signers;
  if (o.signers === 'none' && persisted.signers) emit({ kind: 'warn', source: 'controller', message: `signing turned off (--signers none): commits are no longer checked against ${persisted.signers}` });
  let repo: Repo;
  if (o.url) {
    repo = remoteRepo(checkUrl(o.url, signers, o.allowHttp), o.branch ?? persisted.branch ?? 'main', mirrorOf(o), credentialsFor(o.credentials));
  } else {
    const path = resolve(o.repo ?? '.');
    repo = localRepo(path, o.branch ?? persisted.branch ?? (await firstBranch(path, signers)));
  }
  const head = await headOf(repo, emit);
  // A repository of several machines: the fleet's last promoted commit (its own directory has no journal).
  const running = runningBuild(state.dir)?.commit ?? persisted.promoted;
  const start = await startingPoint(repo, head, { signers, running });
  if (start.commit !== head && !running) emit({ kind: 'warn', source: 'controller', message: `the branch head's ramboot.yaml is not valid; starting with the configuration of ${start.commit.slice(0, 12)}` });
  savePersisted(state.dir, { ...persisted, signers: start.signers, branch: repo.branch });
  return { repo, config: start.config, state, start: start.commit, signers: o.signers && o.signers !== 'none' ? resolve(o.signers) : undefined };
}

/** Until the branch can be read there is nothing to control: say why, and keep trying. */
async function headOf(repo: Repo, emit: (e: AnyEvent) => void): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await repo.head();
    } catch (err) {
      if (!(err instanceof RambootError) || err.kind !== 'retry') throw err;
      emit({ kind: 'warn', source: 'controller', message: `${describe(err)} (attempt ${attempt})` });
      await new Promise((r) => setTimeout(r, backoffMs(attempt, HEAD_BACKOFF)));
    }
  }
}

/**
 * A first start with no --branch: watch.branch of the checked-out commit, when it passes
 * the policy in force (or none is); else main. Later starts keep the branch recorded.
 */
async function firstBranch(path: string, signers: string | undefined): Promise<string> {
  const probe = localRepo(path, 'HEAD');
  try {
    const head = await git.resolveRef({ fs, gitdir: probe.gitdir, ref: 'HEAD' });
    const config = await configOf(await gitSource(path, head));
    const policy = signers ?? config.watch.signers;
    if (policy) {
      const check = await verifyCommit(await probe.rawCommit(head), (await probe.info(head)).committerEmail, policy);
      if (!check.ok) return 'main';
    }
    return config.watch.branch;
  } catch {
    return 'main';
  }
}

/** --url without credentials in it (every local user reads the command line), and https unless a person allows http. */
function checkUrl(url: string, signers: string | undefined, allowHttp?: boolean): string {
  if (!isUrl(url)) throw new UsageError(`--url ${redactUrl(url)}: only http:// and https:// remotes are supported; for a local repository use --repo`, { step: 'up', input: redactUrl(url) });
  if (redactUrl(url) !== url) {
    throw new UsageError(
      `--url ${redactUrl(url)}: credentials in the URL are visible to every user of this host (ps); put USER:TOKEN in a file only root can read and pass --credentials FILE, or set $RAMBOOT_GIT_USERNAME and $RAMBOOT_GIT_PASSWORD, or use git's credential helper`,
      { step: 'up', input: redactUrl(url) },
    );
  }
  if (/^http:/i.test(url) && !signers && !allowHttp) {
    throw new UsageError(
      `--url ${url}: a plain http:// remote without signed commits lets anyone on the network path choose what the machine runs; use https://, require signed commits (--signers FILE), or accept the risk with --allow-http`,
      { step: 'up', input: url },
    );
  }
  return url;
}

/** A mirror named by the URL: a new token fetches into the same mirror. */
function mirrorOf(o: UpOptions): string {
  return join(cacheRoot(o.state), 'mirrors', `${createHash('sha256').update(redactUrl(o.url!)).digest('hex').slice(0, 16)}.git`);
}

/**
 * The virtual NAS of this machine: an existing disk boots what its labels say; a new
 * one is formatted with the first image (the branch's build, or what the registry names),
 * so that the first reconcile finds it running.
 * It always has a TPM (swtpm), as boards sold today do: a machine is enrolled while it
 * still keeps its secrets on the medium, before the repository asks for secrets.at_rest: tpm.
 */
async function bootVirtualNas(
  state: MachineState,
  emit: (e: AnyEvent) => void,
  vm: { sshPort: number; httpPort: number },
  firstImage: () => Promise<{ imageDir: string; manifest: Manifest }>,
): Promise<VirtualNas> {
  let imageDir: string | undefined;
  if (!existsSync(join(state.vm, 'disk.img'))) {
    const b = await firstImage();
    if (!b.manifest.hostKey) {
      throw new UsageError('failed to start the virtual NAS: the repository has no host key secret to pin (ramboot secrets add etc/ssh/ssh_host_ed25519_key --generate ssh-ed25519)', { step: 'up' });
    }
    emit({ kind: 'stage', source: 'vm', message: `a new disk for the virtual NAS, with build ${b.manifest.buildId} (host key ${fingerprint(b.manifest.hostKey)})` });
    imageDir = b.imageDir;
  }
  const nas = await startVirtualNas({ state, firstImage: imageDir, sshPort: vm.sshPort, httpPort: vm.httpPort, tpm: true, emit });
  const ms = await nas.waitForSsh(BOOT_DEADLINE_MS);
  emit({ kind: 'stage', source: 'vm', message: `the virtual NAS answers SSH after ${(ms / 1000).toFixed(1)} s` });
  return nas;
}

/** The branch's build at a commit, for a new virtual NAS's disk. */
function buildAt(o: UpOptions, repo: Repo, commit: string, state: MachineState, emit: (e: AnyEvent) => void, machine?: string) {
  return () => build({ repoDir: repo.gitdir, rev: commit, machine, imagesDir: state.images, cacheDir: state.cache, origin: repo.label, identity: o.identity, emit });
}

/** The triggers: the branch watched (a local file every few seconds, a remote on watch.poll), the refresh schedule. */
function watch(ctrl: Pick<Controller, 'poll' | 'scrub' | 'refresh'>, repo: Repo, config: Config): () => void {
  const stops: (() => void)[] = [];
  if (isUrl(repo.label)) {
    const task = cron.schedule(config.watch.poll, () => void ctrl.poll({ kind: 'poll' }), { noOverlap: true, name: 'poll' });
    stops.push(() => void task.stop());
  } else {
    const timer = setInterval(() => void ctrl.poll({ kind: 'ref' }), LOCAL_POLL_MS);
    stops.push(() => clearInterval(timer));
  }
  const scrubbing = cron.schedule(config.medium.scrub, () => void ctrl.scrub(), { name: 'scrub' });
  stops.push(() => void scrubbing.stop());
  if (config.watch.refresh) {
    const task = cron.schedule(config.watch.refresh, () => ctrl.refresh(), { name: 'refresh' });
    stops.push(() => void task.stop());
  }
  return () => stops.forEach((s) => s());
}

/** The API token: the given file's, else one made once and kept (0600) in the state directory. */
function readOrMakeToken(state: MachineState, file?: string): string {
  if (file) return readPrivateFile(resolve(file), 'the API token (--token-file)').trim();
  const path = join(state.dir, 'api-token');
  if (existsSync(path)) return readFileSync(path, 'utf8').trim();
  const token = randomBytes(24).toString('base64url');
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  return token;
}

/**
 * The views of the controller's state besides the API: the status page (with the
 * machine's facts, probed over SSH at most every minute while someone looks), /metrics,
 * and the notifications sent on each deploy's start and verdict.
 */
function views(
  ctrl: Controller,
  metrics: Metrics,
  o: { host: string; repo: Repo; state: MachineState; reach: () => LocalSettings; emit: (e: AnyEvent) => void },
): { routes: ServerOptions['routes']; notifier: Notifier } {
  const live = new Live();
  live.attach(ctrl);
  metrics.attach(ctrl);
  const notifier = new Notifier({ gitdir: o.repo.gitdir, emit: o.emit, onDelivery: (t, a) => metrics.notified(t, a) });
  notifier.attach(ctrl);
  const machine = new MachineProbe({ reach: () => machineReach(o.state, o.reach, ctrl.running()), busy: () => isDeploying(ctrl.status().current?.phase), promoted: () => ctrl.running()?.buildId });
  return { routes: [pageRoutes({ host: o.host, live, machine, notifications: () => notifier.state() }), metrics.routes()], notifier };
}

/**
 * `ramboot up` for a repository of several machines (machines/NAME/): one fleet follows
 * the branch and rolls each commit out canary-first (fleet.ts); each machine has its own
 * state directory and controller, its page under /machines/NAME/, its notices and a
 * `machine` label on /metrics. A machine with no host.address is a virtual NAS of its own,
 * on --ssh-port and --http-port plus its place among the machines (by name).
 */
async function upFleet(o: UpOptions, opened: Opened, names: string[], x: { token: string; webhookSecret?: string; emit: (e: AnyEvent) => void }): Promise<number> {
  const { repo, config, start } = opened;
  const origin = originOf(o.url ?? resolve(o.repo ?? '.'));
  const workTree = !o.url && existsSync(join(resolve(o.repo ?? '.'), '.git')) ? resolve(o.repo ?? '.') : undefined;
  const metrics = new Metrics({ machines: true });
  const vms: VirtualNas[] = [];
  const notifiers: Notifier[] = [];
  const pages: MachineRoutes[] = [];
  let fleet: Fleet | undefined;
  const open = async (machine: string, commit: string): Promise<Controller> => {
    const state = machineState({ state: o.state, origin, machine, workTree });
    makePrivateDir(state.dir);
    const own = await configOf(await gitSource(repo.gitdir, commit), machine).catch(() => undefined);
    let reach: () => LocalSettings = () => ({});
    if (own && !own.host.address) {
      const at = vms.length;
      const nas = await bootVirtualNas(state, say(machine, x.emit), { sshPort: o.sshPort + at, httpPort: o.httpPort + at }, buildAt(o, repo, commit, state, say(machine, x.emit), machine));
      vms.push(nas);
      reach = () => ({ address: '127.0.0.1', port: nas.record.sshPort, powerCycle: () => nas.powerCycle() });
    }
    const ctrl = new Controller({ repo, state, identity: o.identity, reach, machine, inRollout: { signers: () => fleet!.rolloutSigners(), shared: () => fleet!.shared() }, keep: config.watch.history, emit: say(machine, x.emit) });
    const v = machineViews(ctrl, metrics, { machine, host: own?.host.name ?? machine, repo, state, reach, emit: x.emit });
    notifiers.push(v.notifier);
    pages.push({ name: machine, ctrl, routes: [pageRoutes({ host: own?.host.name ?? machine, live: v.live, machine: v.probe, notifications: () => v.notifier.state(), base: `/machines/${machine}` })] });
    return ctrl;
  };
  fleet = new Fleet({ repo: metrics.countPolls(repo), stateDir: opened.state.dir, signers: opened.signers, branchGiven: !!o.branch, open, emit: x.emit });
  metrics.attachRepo(() => fleet!.status());
  await fleet.start(start);
  const index = (app: FastifyInstance, f: Fleet) => {
    app.get('/', async (req, reply) => {
      const done = (req.query as { done?: string }).done;
      return reply.type('text/html; charset=utf-8').send(renderFleet(f.status(), Date.now(), done ? `Done: ${done}.` : undefined).text);
    });
  };
  const server = await startServer(fleet, { host: o.listen.host, port: o.listen.port, token: x.token, webhookSecret: x.webhookSecret, routes: [index, assetRoutes, metrics.routes()], machines: pages });
  const api = `http://${o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host}:${o.listen.port}`;
  writePrivateFile(join(opened.state.dir, 'api.json'), `${JSON.stringify({ url: api, pid: process.pid }, null, 2)}\n`);
  const stopTriggers = watch(fleet, repo, config);
  await fleet.poll({ kind: 'start' }, true);
  o.render.end();
  const r = config.rollout;
  o.stdout.write(
    `ramboot controls ${names.length} machines (${names.join(', ')}) from ${repo.label} (branch ${repo.branch}), ${r.canary ? `canary ${r.canary} first, then ` : ''}${r.parallel} at a time\n` +
      `  status page: ${api}/   metrics: ${api}/metrics\n` +
      `  API: ${api}/api/status   (token in ${o.tokenFile ?? join(opened.state.dir, 'api-token')})\n` +
      (x.webhookSecret ? `  webhook: POST ${api}/hooks/git\n` : '') +
      vms.map((nas, i) => `  virtual NAS ${i + 1}: ssh -p ${nas.record.sshPort} root@127.0.0.1 (serial console ${nas.record.serialLog})\n`).join('') +
      `  state: ${opened.state.dir} and one directory per machine\n`,
  );
  return new Promise<number>(() => {
    onStopSignal((signal) => {
      x.emit({ kind: 'stage', source: 'controller', message: `${signal}: stopping; a deploy in progress resumes at the next start` });
      stopTriggers();
      void (async () => {
        await fleet!.stop(signal);
        await Promise.all(notifiers.map((n) => n.settle(STOP_NOTIFY_GRACE_MS)));
        await server.close();
        for (const nas of vms) await nas.stop();
        process.exit(signalExitCode(signal));
      })();
    });
  });
}

/** A machine's events, its name in front of what they say: the fleet's log reads as one. */
function say(machine: string, emit: (e: AnyEvent) => void): (e: AnyEvent) => void {
  return (e) => emit('message' in e && typeof e.message === 'string' ? ({ ...e, message: `${machine}: ${e.message}` } as AnyEvent) : e);
}

/** One machine's views in a fleet: its live page state, its probe, its notices; its series on the shared /metrics. */
function machineViews(
  ctrl: Controller,
  metrics: Metrics,
  o: { machine: string; host: string; repo: Repo; state: MachineState; reach: () => LocalSettings; emit: (e: AnyEvent) => void },
): { live: Live; probe: MachineProbe; notifier: Notifier } {
  const live = new Live();
  live.attach(ctrl);
  metrics.attach(ctrl, o.machine);
  const notifier = new Notifier({ gitdir: o.repo.gitdir, machine: o.machine, emit: o.emit, onDelivery: (t, a) => metrics.notified(t, a) });
  notifier.attach(ctrl);
  const probe = new MachineProbe({ reach: () => machineReach(o.state, o.reach, ctrl.running()), busy: () => isDeploying(ctrl.status().current?.phase), promoted: () => ctrl.running()?.buildId });
  return { live, probe, notifier };
}

/** How often a site controller asks the registry what its tag names: a HEAD request, nothing fetched. */
const SITE_POLL_MS = 20_000;

/**
 * `ramboot up --registry REF`: a site controller (site.ts). It has no repository and never
 * builds: its state is keyed by the registry repository, its machine is the one the first
 * image pulled describes (a virtual NAS, formatted with that image, when it has no
 * host.address), and it deploys each new image the tag names.
 */
async function upSite(o: UpOptions, emit: (e: AnyEvent) => void): Promise<number> {
  if (o.url || o.branch || o.signers) throw new UsageError('ramboot up --registry follows a registry tag: --url, --branch and --signers are for a branch', { step: 'up' });
  const ref = parseRef(o.registry!);
  const state = machineState({ state: o.state, origin: repositoryOf(ref) });
  makePrivateDir(state.dir);
  const pull = () => pullImage(ref, state.images, { identity: o.identity, loginFile: o.registryLogin, render: o.render });
  // The machine is the one the image describes: the image it runs, else the first the registry gives.
  const running = runningBuild(state.dir)?.buildId;
  let first: { imageDir: string; manifest: Manifest } | undefined = running && existsSync(join(state.images, running, MANIFEST)) ? { imageDir: join(state.images, running), manifest: readManifestSync(join(state.images, running)) } : undefined;
  for (let attempt = 1; !first; attempt++) {
    try {
      first = await pull();
    } catch (err) {
      // Not there yet, refused, or unreachable: said, and asked again until a good image is published. What needs a person here (no identity, a login) ends it.
      if (!(err instanceof RambootError) || err.kind === 'person') throw err;
      emit({ kind: 'warn', source: 'registry', message: `${describe(err)} (attempt ${attempt}; asking again)` });
      await new Promise((r) => setTimeout(r, backoffMs(attempt, HEAD_BACKOFF)));
    }
  }
  const host = first.manifest.settings.host;
  let nas: VirtualNas | undefined;
  let reach: () => LocalSettings = () => ({});
  if (!host.address) {
    const booted = await bootVirtualNas(state, emit, o, async () => first);
    nas = booted;
    reach = () => ({ address: '127.0.0.1', port: booted.record.sshPort, powerCycle: () => booted.powerCycle() });
  }
  // The login is read at each look, as each pull reads it: a rotated token is taken up.
  const site = new Site({ state, look: () => manifestDigest(ref, { login: registryLogin(o.registryLogin, process.env) }), pull, reach, emit });
  await site.poll();
  const timer = setInterval(() => void site.poll(), SITE_POLL_MS);
  o.render.end();
  o.stdout.write(
    `ramboot deploys ${host.name} from ${ref.text} (a site controller: it pulls, never builds; the tag is looked at every ${SITE_POLL_MS / 1000} s)\n` +
      (nas ? `  the virtual NAS: ssh -p ${nas.record.sshPort}${host.identity ? ` -i ${host.identity}` : ''} root@127.0.0.1 (serial console ${nas.record.serialLog}); its status page http://127.0.0.1:${nas.record.httpPort}/\n` : '') +
      `  state: ${state.dir}\n`,
  );
  return new Promise<number>(() => {
    onStopSignal((signal) => {
      emit({ kind: 'stage', source: 'controller', message: `${signal}: stopping; a deploy in progress resumes at the next start` });
      clearInterval(timer);
      site.stop();
      void (async () => {
        await nas?.stop();
        process.exit(signalExitCode(signal));
      })();
    });
  });
}
