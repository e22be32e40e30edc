import { execa } from 'execa';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { parse, stringify } from 'yaml';
import { readManifest } from '../../image/manifest.js';
import { runCli } from '../../controller/cli/commands.js';
import { targetFor } from '../../deploy/target.js';
import { deploy, type DeployEvent, type DeployResult } from '../../deploy/deploy.js';
import { Journal, type JournalRecord } from '../../deploy/journal.js';
import { readSlots } from '../../deploy/medium.js';
import { readRunning, type Running } from '../../deploy/running.js';
import { requestReboot, waitUntil } from '../../deploy/reboot.js';
import type { SlotTable } from '../../deploy/slots.js';
import { connect, type Session, type Target } from '../../deploy/ssh.js';
import { startVm, type Vm } from '../../vm/qemu.js';
import { standInMirror, useStandIns } from './alpine-standins.js';
import { CLI, SHARED_STATE, buildRepo, freePort, initRepo, ramboot, tempDir, type Built } from './ramboot.js';

// The virtual NAS with the Debian example (or the Alpine template), as the deploy
// end-to-end tests use it: a repository from `ramboot init`, a stick formatted with its
// first build, one VM booted from it, and the ways a test changes, deploys and inspects
// the machine.

export const MEDIUM = '/media/usb';

export interface Settings {
  confirm?: string;
  /** trial.watchdog_module, with trial.watchdog. */
  watchdog?: string;
  /** boot.firmware, when not the machine's own (an image for the other firmware). */
  firmware?: 'bios' | 'uefi';
  /** host.address, port and identity of this VM in ramboot.yaml: what `ramboot up` deploys to. */
  address?: boolean;
  checks?: Record<string, unknown>[];
  /** health.deadline (default 2m). */
  deadline?: string;
}

export interface DeployRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface VirtualNas {
  vm: Vm;
  /** The disk image the VM boots (its TPM's state, with tpm, beside it in DISK.tpm/). */
  disk: string;
  /** Stops the VM and boots a fresh qemu process on the same disk (and TPM state); resolves once it answers SSH. */
  restart(): Promise<void>;
  repo: string;
  env: Record<string, string>;
  work: string;
  /** The machine's state directory (journal, lock): `--state <stateDir>` for the CLI. */
  stateDir: string;
  first: Built;
  hostKey: string;
  log(m: string): void;
  /** Rewrites ramboot.yaml (committed with the next change): status page check, short deadlines, extra checks. */
  settings(o?: Settings): void;
  /** Writes files into the repository (content, [content, mode], or null to delete), commits and builds. */
  change(files: Record<string, string | Buffer | [string, number] | null>, message: string): Promise<Built>;
  /** The ramboot command as a process of its own, with the repository's environment and the test run's package cache. */
  cli(args: string[]): Promise<DeployRun>;
  /** The loopback ports the VM's SSH and HTTP are forwarded to. */
  sshPort: number;
  httpPort: number;
  /** Pins another host key from now on (after a rotation). */
  pin(hostKey: string): void;
  /** The arguments that point a machine verb at this VM: --state, --address, --port, --ssh-key. */
  reach(): string[];
  /** Where the test's builds are published. */
  images: string;
  /** Overwrites 16 bytes in the middle of a file on the medium, as a cheap USB stick does. */
  damage(path: string): Promise<void>;
  /** The slot and build of every boot the serial console saw, oldest first ("lts 1234abcd-…"). */
  boots(): string[];
  /** Reboots the machine from inside and waits until it answers from the new boot. */
  reboot(): Promise<Running>;
  /** Waits until the machine answers from a boot other than this one. */
  waitForBoot(previousBootId: string): Promise<Running>;
  /** `ramboot deploy --image IMAGE` in this process, reaching the VM's forwarded port; `extra` are more arguments. */
  deploy(image: string, extra?: string[]): Promise<DeployRun>;
  /** The deploy protocol itself, for a test that acts on its events (the CLI prints them). */
  deployWatching(image: string, onEvent: (e: DeployEvent) => void): Promise<DeployResult>;
  /** `ramboot deploy` as a process of its own, killed with SIGKILL at the first stderr line matching `killAt`. */
  deployProcess(image: string, killAt?: RegExp): Promise<DeployRun & { killed: boolean }>;
  /** The last journal record of the host. */
  lastRecord(): Promise<JournalRecord | undefined>;
  session(): Promise<Session>;
  running(): Promise<Running>;
  slots(): Promise<SlotTable>;
  /** sha256 of every file on the medium: what "nothing changed on the machine" compares. */
  listing(): Promise<string>;
  /** Runs a command on the machine; fails on a non-zero exit. */
  sh(command: string): Promise<string>;
  /** Power-cycles the VM and waits until it answers from a new boot. */
  powerCycle(): Promise<Running>;
  stop(): Promise<void>;
}

/** A public key no machine has: what a different machine (or a man in the middle) would present. */
export function strangerKey(): string {
  const jwk = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' });
  const raw = Buffer.from(jwk.x!, 'base64url');
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]).toString('base64')}`;
}

function sink(): { stream: NodeJS.WriteStream; text: () => string } {
  let buf = '';
  const w = new Writable({
    write(chunk, _enc, cb) {
      buf += String(chunk);
      cb();
    },
  });
  return { stream: w as unknown as NodeJS.WriteStream, text: () => buf };
}

/**
 * `distro: 'alpine'` starts from the Alpine template (`ramboot init`'s default) and its
 * packages from the local stand-ins for the Alpine mirror (helpers/alpine-standins.ts).
 */
export async function startNas(name: string, o: { firmware?: 'bios' | 'uefi'; tpm?: boolean; packages?: string[]; distro?: 'debian' | 'alpine' } = {}): Promise<VirtualNas> {
  const firmware = o.firmware ?? 'bios';
  const t0 = Date.now();
  const log = (m: string) => console.log(`[${name} +${Math.round((Date.now() - t0) / 1000)} s] ${m}`);
  // The Alpine stand-ins have no syslinux (helpers/alpine-standins.ts): such a machine boots UEFI.
  if (o.distro === 'alpine' && firmware !== 'uefi') throw new Error('startNas: the Alpine template boots only with firmware: uefi here');
  const { repo, env } = await initRepo(o.distro ?? 'debian');
  if (o.distro === 'alpine') {
    const t = Date.now();
    useStandIns(repo, await standInMirror());
    log(`the stand-in Alpine mirror is ready after ${Math.round((Date.now() - t) / 1000)} s`);
  }
  const identity = join(env.HOME!, '.config/ramboot/id_ed25519');
  const work = tempDir(name);
  const images = join(work, 'images');
  const stateDir = join(work, 'state');
  const reach = () => ['--state', stateDir, '--address', '127.0.0.1', '--port', String(sshPort), '--ssh-key', identity];
  const sshPort = await freePort();
  const httpPort = await freePort();
  const original = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
  const git = async (...args: string[]) => {
    await execa('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.invalid', ...args], { cwd: repo });
  };
  const settings = (o: Settings = {}) => {
    const c = structuredClone(original);
    c.trial = { confirm_timeout: o.confirm ?? '3m', reboot_deadline: '6m', ...(o.watchdog ? { watchdog: true, watchdog_module: o.watchdog } : {}) };
    c.boot = { ...c.boot, firmware: o.firmware ?? firmware };
    if (o.address) c.host = { ...c.host, address: '127.0.0.1', port: sshPort, identity };
    c.health = {
      deadline: o.deadline ?? '2m',
      checks: [{ name: 'status page', http: `http://127.0.0.1:${httpPort}/release`, body: 'ramboot.slot=new' }, ...(o.checks ?? [])],
    };
    writeFileSync(join(repo, 'ramboot.yaml'), stringify(c));
  };
  settings();
  if (o.packages) writeFileSync(join(repo, 'packages'), `${readFileSync(join(repo, 'packages'), 'utf8')}${o.packages.join('\n')}\n`);
  await git('add', '-A');
  await git('commit', '-q', '-m', 'deploy test settings');
  const first = await buildRepo(repo, images, env);
  const hostKey: string = JSON.parse(readFileSync(join(first.imageDir, 'manifest.json'), 'utf8')).hostKey;
  const disk = join(work, 'disk.img');
  const f = await ramboot(['format', '--disk', disk, '--image', first.imageDir, '--firmware', firmware], env);
  if (f.exitCode !== 0) throw new Error(`ramboot format failed: ${f.stderr}`);
  const vmOptions = { disk, sshPort, httpPort, serialLog: join(work, 'serial.log'), monitor: join(work, 'monitor.sock'), tpm: o.tpm };
  let vm = startVm(vmOptions);
  const ms = await vm.waitForSsh(8 * 60_000);
  log(`first boot answered SSH after ${Math.round(ms / 1000)} s; serial log ${join(work, 'serial.log')}`);

  const target: Target = { name: 'nas', address: '127.0.0.1', port: sshPort, user: 'root', identityFile: identity, hostKey };
  const withSession = async <T>(fn: (s: Session) => Promise<T>): Promise<T> => {
    const s = await connect(target);
    try {
      return await fn(s);
    } finally {
      s.close();
    }
  };

  const nasObject: VirtualNas = {
    vm,
    disk,
    async restart() {
      await vm.stop();
      vm = startVm(vmOptions);
      nasObject.vm = vm;
      const t = await vm.waitForSsh(8 * 60_000);
      log(`restarted: answered SSH after ${Math.round(t / 1000)} s`);
    },
    repo,
    env,
    work,
    stateDir,
    first,
    hostKey,
    log,
    settings,
    async change(files, message) {
      for (const [file, spec] of Object.entries(files)) {
        if (spec === null) {
          rmSync(join(repo, file), { force: true });
          continue;
        }
        const [content, mode] = Array.isArray(spec) ? spec : [spec, 0o644];
        mkdirSync(join(repo, file, '..'), { recursive: true });
        writeFileSync(join(repo, file), content);
        chmodSync(join(repo, file), mode);
      }
      await git('add', '-A');
      await git('commit', '-q', '-m', message);
      const t = Date.now();
      const b = await buildRepo(repo, images, env);
      log(`built ${b.buildId} (${message}) in ${Math.round((Date.now() - t) / 1000)} s`);
      return b;
    },
    images,
    reach,
    async cli(args) {
      const t = Date.now();
      const r = await ramboot(args, { ...env, RAMBOOT_CACHE: join(SHARED_STATE, 'cache') });
      log(`ramboot ${args[0]} → exit ${r.exitCode} in ${Math.round((Date.now() - t) / 1000)} s\n${r.stdout}${r.stderr.split('\n').slice(-5).join('\n')}`);
      return { code: r.exitCode, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t };
    },
    sshPort,
    httpPort,
    pin(key) {
      target.hostKey = key;
      nasObject.hostKey = key;
    },
    async damage(path) {
      const f = `${MEDIUM}/${path}`;
      await withSession((s) => s.check('damage a file', `size=$(stat -c %s '${f}') && head -c 16 /dev/urandom | dd of='${f}' bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null && sync`));
    },
    boots() {
      return [...vm.serial().matchAll(/^\[\s*0\.0+\] Command line: .*ramboot\.slot=(\w+) ramboot\.build=(\S+)/gm)].map((m) => `${m[1]} ${m[2]}`);
    },
    async waitForBoot(previous) {
      const back = await waitUntil(target, 8 * 60_000, (r) => r.bootId !== previous);
      if (!back.running) throw new Error(`the virtual NAS did not come back: ${back.last.reachable ? 'same boot' : back.last.error}`);
      return back.running;
    },
    async reboot() {
      const s = await connect(target);
      const bootId = (await readRunning(s)).bootId;
      await requestReboot(s);
      s.close();
      const back = await waitUntil(target, 8 * 60_000, (r) => r.bootId !== bootId);
      if (!back.running) throw new Error(`the virtual NAS did not come back after a reboot: ${back.last.reachable ? 'same boot' : back.last.error}`);
      return back.running;
    },
    async deploy(image, extra = []) {
      const out = sink();
      const err = sink();
      const t = Date.now();
      const code = await runCli(['deploy', '--image', image, ...reach(), ...extra], { stdin: process.stdin, stdout: out.stream, stderr: err.stream, env: { ...process.env, ...env } });
      log(`deploy ${image.split('/').pop()} → exit ${code} in ${Math.round((Date.now() - t) / 1000)} s\n${out.text()}`);
      return { code, stdout: out.text(), stderr: err.text(), ms: Date.now() - t };
    },
    async deployWatching(image, onEvent) {
      const manifest = await readManifest(image);
      const t = targetFor(manifest.settings, { address: '127.0.0.1', port: sshPort, identity });
      const journal = await Journal.open(stateDir);
      const r = await deploy({ target: t, journal, imageDir: image, manifest, onEvent });
      log(`deploy ${image.split('/').pop()} → ${r.outcome.verdict}: ${r.outcome.message}; sent ${r.bytesSent ?? 0} bytes`);
      return r;
    },
    async lastRecord() {
      const journal = await Journal.open(stateDir);
      return journal.deploys().at(-1)?.last;
    },
    async deployProcess(image, killAt) {
      const t = Date.now();
      const args = [CLI, 'deploy', '--image', image, ...reach()];
      const child = execa('node', args, { reject: false, env: { ...process.env, ...env }, stdin: 'ignore' });
      let stderr = '';
      let killed = false;
      child.stderr!.on('data', (d: Buffer) => {
        stderr += String(d);
        if (killAt && !killed && killAt.test(stderr)) {
          killed = true;
          child.kill('SIGKILL');
        }
      });
      const r = await child;
      const stdout = String(r.stdout);
      log(`deploy process ${image.split('/').pop()} → ${killed ? 'killed' : `exit ${r.exitCode}`} in ${Math.round((Date.now() - t) / 1000)} s\n${stderr}${stdout}`);
      return { code: r.exitCode ?? -1, stdout, stderr, ms: Date.now() - t, killed };
    },
    session: () => connect(target),
    running: () => withSession(readRunning),
    slots: () => withSession((s) => readSlots(s, MEDIUM)),
    listing: () => withSession((s) => s.check('list the medium', `cd ${MEDIUM} && find . -type f | sort | xargs sha256sum`)),
    sh: (command) => withSession((s) => s.check('run a test command', command)),
    async powerCycle() {
      const before = await withSession(readRunning);
      const t = Date.now();
      await vm.powerCycle();
      const back = await waitUntil(target, 8 * 60_000, (r) => r.bootId !== before.bootId);
      if (!back.running) throw new Error(`the virtual NAS did not come back after a power cycle: ${back.last.reachable ? 'same boot' : back.last.error}`);
      log(`power cycle: back after ${Math.round((Date.now() - t) / 1000)} s on slot ${back.running.slot}, build ${back.running.build}`);
      return back.running;
    },
    stop: () => vm.stop(),
  };
  return nasObject;
}
