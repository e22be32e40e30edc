import { chmodSync, cpSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { dirSource, listMachines } from '../builder/source.js';
import { MACHINES_DIR } from '../lib/config.js';
import { RambootError, UsageError, describe } from '../lib/errors.js';
import { packagePath } from '../lib/package.js';
import { checkSecrets } from '../secrets/check.js';
import { loadIdentities } from '../secrets/identity.js';
import { callController, findController } from './client.js';
import type { Envelope } from './controller.js';
import { configOf } from './open-machine.js';
import { describeEvent } from './render.js';
import { gitdirOf } from './repo.js';
import { verifyCommit } from './signing.js';
import { loadPersisted } from './persisted.js';
import { machineState, originOf } from './state.js';

// Push-to-deploy: the hooks `ramboot hook install` puts into the bare repository the
// controller follows. pre-receive is the gate (signature policy, ramboot.yaml valid,
// secrets decrypt) and can refuse the push with the reason; post-receive, after the ref
// moved, streams the controller's reconcile of the pushed commit as `remote:` lines
// until the verdict. The trial boot never runs inside pre-receive: a reboot must not
// hold the ref update hostage.

const ZERO = /^0+$/;

export interface HookSettings {
  branch: string;
  state?: string;
  signers?: string;
}

/** Writes the two hooks (replacing earlier ones of ramboot's) and lets pushes carry -o options. */
export async function installHooks(bare: string, s: HookSettings): Promise<string[]> {
  const gitdir = gitdirOf(resolve(bare));
  const cli = packagePath('dist', 'controller', 'cli.js');
  const args = [`--branch ${shq(s.branch)}`, s.state ? `--state ${shq(resolve(s.state))}` : '', s.signers ? `--signers ${shq(resolve(s.signers))}` : ''].filter(Boolean).join(' ');
  const written: string[] = [];
  for (const hook of ['pre-receive', 'post-receive']) {
    const file = join(gitdir, 'hooks', hook);
    if (existsSync(file) && !readFileSync(file, 'utf8').includes('ramboot hook')) {
      throw new UsageError(`failed to install ${file}: a hook that is not ramboot's is there; merge it by hand (it runs \`ramboot hook ${hook}\`)`, { step: 'hook install', input: file });
    }
    writeFileSync(file, `#!/bin/sh\n# Installed by \`ramboot hook install\`: see docs/ARCHITECTURE.md, "Push to deploy".\nexec ${shq(process.execPath)} ${shq(cli)} hook ${hook} --repo "$GIT_DIR" ${args}\n`);
    chmodSync(file, 0o755);
    written.push(file);
  }
  await execa('git', ['--git-dir', gitdir, 'config', 'receive.advertisePushOptions', 'true']);
  // With signed commits the branch only moves forward (the gate checks it too, against the policy in force at push time).
  if (s.signers || policyOf(s, gitdir)) await execa('git', ['--git-dir', gitdir, 'config', 'receive.denyNonFastForwards', 'true']);
  return written;
}

function shq(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

interface Update {
  old: string;
  new: string;
  ref: string;
}

function updatesOf(stdin: string, branch: string): Update[] {
  return stdin
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length === 3)
    .map(([old, neu, ref]) => ({ old: old!, new: neu!, ref: ref! }))
    .filter((u) => u.ref === `refs/heads/${branch}` && !ZERO.test(u.new));
}

/**
 * The gate, run by git with the pushed objects still in quarantine (only this process's
 * environment makes them readable, which is why the git CLI reads them here). Returns
 * the problems; an empty list lets the push in.
 */
export async function preReceive(gitdir: string, stdin: string, s: HookSettings, env: NodeJS.ProcessEnv): Promise<string[]> {
  const problems: string[] = [];
  for (const u of updatesOf(stdin, s.branch)) {
    const tree = mkdtempSync(join(tmpdir(), 'ramboot-gate-'));
    try {
      await execa('sh', ['-c', 'git archive --format=tar "$1" | tar -x -C "$2"', 'gate', u.new, tree], { env: { ...env, GIT_DIR: gitdir } });
      refuseLinks(tree);
      const source = await dirSource(tree);
      const machines = await listMachines(source);
      const signers = s.signers ?? policyOf(s, gitdir);
      if (signers && !ZERO.test(u.old) && !(await isAncestor(u.old, u.new, { ...env, GIT_DIR: gitdir }))) {
        problems.push(`${u.new.slice(0, 12)}: not a descendant of ${u.old.slice(0, 12)}, which ${s.branch} names now: with signed commits required the branch only moves forward (an older signed commit would bring back what was revoked)`);
        continue;
      }
      if (signers) {
        // The object exactly as stored: the signature covers its last newline too.
        const raw = (await execa('git', ['cat-file', 'commit', u.new], { env: { ...env, GIT_DIR: gitdir }, encoding: 'buffer', stripFinalNewline: false })).stdout as Buffer;
        const email = (await execa('git', ['log', '-1', '--format=%ce', u.new], { env: { ...env, GIT_DIR: gitdir } })).stdout.trim();
        const check = await verifyCommit(Buffer.from(raw), email, signers);
        if (!check.ok) problems.push(`${u.new.slice(0, 12)}: untrusted commit: ${check.reason}`);
      }
      // A repository of several machines: each machine's ramboot.yaml and secrets, as that machine sees them.
      for (const machine of machines.length > 0 ? machines : [undefined]) {
        const at = `${u.new.slice(0, 12)}: ${machine ? `machine ${machine}: ` : ''}`;
        try {
          const config = await configOf(source, machine);
          // secrets.identity is resolved as the controller resolves it, never inside the pushed tree (a push could bring its own key).
          const identities = await loadIdentities({ env, config, repoDir: gitdir });
          const view = machine ? mkdtempSync(join(tmpdir(), 'ramboot-gate-machine-')) : tree;
          try {
            if (machine) machineView(tree, machine, view);
            const { problems: secretProblems } = await checkSecrets(view, config, identities);
            // A file of the machine's own is named where it is in the repository.
            const where = (path: string) => (machine && existsSync(join(tree, MACHINES_DIR, machine, path)) ? `${MACHINES_DIR}/${machine}/${path}` : path);
            for (const p of secretProblems) problems.push(`${at}${where(p.where)}: ${p.problem}`);
          } finally {
            if (view !== tree) rmSync(view, { recursive: true, force: true });
          }
        } catch (err) {
          if (!(err instanceof RambootError)) throw err;
          problems.push(`${at}${err.message}`);
        }
      }
    } catch (err) {
      if (!(err instanceof RambootError)) throw err;
      problems.push(`${u.new.slice(0, 12)}: ${err.message}`);
    } finally {
      rmSync(tree, { recursive: true, force: true });
    }
  }
  return problems;
}

/**
 * A machine's secrets/ and root/ as it sees them (machines/NAME/ over the top level),
 * copied into `view` for checkSecrets. A file of the machine's where the top level has a
 * directory (or the other way round) cannot be laid over: that is a problem in the push.
 */
function machineView(tree: string, machine: string, view: string): void {
  for (const dir of ['secrets', 'root']) {
    for (const from of [join(tree, dir), join(tree, MACHINES_DIR, machine, dir)]) {
      if (!existsSync(from)) continue;
      try {
        cpSync(from, join(view, dir), { recursive: true, force: true });
      } catch (err) {
        throw new UsageError(`${MACHINES_DIR}/${machine}/${dir}: cannot be laid over the top level's ${dir}/ (${(err as NodeJS.ErrnoException).code ?? describe(err)}): a file where the other has a directory`, { step: 'pre-receive', input: `${MACHINES_DIR}/${machine}/${dir}` });
      }
    }
  }
}

/** The controller's signature policy, as it recorded it (--signers, or the last trusted commit's watch.signers). */
function policyOf(s: HookSettings, gitdir: string): string | undefined {
  return loadPersisted(machineState({ state: s.state, origin: originOf(gitdir) }).dir).signers;
}

async function isAncestor(old: string, neu: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  return (await execa('git', ['merge-base', '--is-ancestor', old, neu], { env, reject: false })).exitCode === 0;
}

/**
 * The gate reads the pushed tree from disk: a top-level secrets, root or ramboot.yaml
 * that is a symbolic link (secrets -> /etc), or a link inside secrets/, would make it read
 * and list the host's files. Builds read git objects and never follow them; the gate refuses them.
 */
function refuseLinks(tree: string): void {
  // The top level, and each machine's directory, which mirrors it.
  const machines = isLink(join(tree, MACHINES_DIR)) ? [] : existsSync(join(tree, MACHINES_DIR)) ? readdirSync(join(tree, MACHINES_DIR)).map((m) => `${MACHINES_DIR}/${m}`) : [];
  const all = isLink(join(tree, MACHINES_DIR)) ? [MACHINES_DIR] : [];
  for (const dir of ['', ...machines]) {
    if (dir && isLink(join(tree, dir))) {
      all.push(dir);
      continue;
    }
    const at = dir ? `${dir}/` : '';
    const links = ['ramboot.yaml', 'secrets', 'root', 'packages', 'setup.sh', 'tpm'].map((p) => `${at}${p}`).filter((p) => isLink(join(tree, p)));
    const secrets = `${at}secrets`;
    all.push(...links, ...(links.includes(secrets) || !existsSync(join(tree, secrets)) ? [] : linksBelow(tree, secrets)));
  }
  if (all.length > 0) {
    throw new UsageError(`${all.join(', ')}: a symbolic link where ramboot reads files of the repository; commit the files themselves`, { step: 'pre-receive', input: all[0] });
  }
}

function linksBelow(tree: string, rel: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(tree, rel), { withFileTypes: true })) {
    const p = `${rel}/${e.name}`;
    if (e.isSymbolicLink()) out.push(p);
    else if (e.isDirectory()) out.push(...linksBelow(tree, p));
  }
  return out;
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** `git push -o ramboot.wait=false` returns at once. */
function waits(env: NodeJS.ProcessEnv): boolean {
  const n = Number(env.GIT_PUSH_OPTION_COUNT ?? 0);
  for (let i = 0; i < n; i++) if (env[`GIT_PUSH_OPTION_${i}`] === 'ramboot.wait=false') return false;
  return true;
}

/** Heartbeat lines: git clients and proxies cut a connection that stays silent too long. */
const QUIET_MS = 15_000;

/**
 * After the ref update: asks the controller to reconcile now and prints its events for
 * the pushed commit until the verdict. Returns the lines' sink's exit code (always 0:
 * the push itself succeeded whatever the deploy does).
 */
export async function postReceive(gitdir: string, stdin: string, s: HookSettings, env: NodeJS.ProcessEnv, out: NodeJS.WritableStream): Promise<number> {
  const [u] = updatesOf(stdin, s.branch).slice(-1);
  if (!u) return 0;
  const say = (line: string) => out.write(`ramboot: ${line}\n`);
  const api = findController(machineState({ state: s.state, origin: originOf(gitdir) }));
  if (!api) {
    say(`no controller runs for ${gitdir}: the push is stored, the machine is unchanged (start one with \`ramboot up --repo ${gitdir}\`)`);
    return 0;
  }
  if (!waits(env)) {
    await callController(api, 'POST', '/api/reconcile?trigger=push');
    say(`deploying ${u.new.slice(0, 12)} in the background; \`ramboot status\` follows it`);
    return 0;
  }
  return follow(api, u.new, say);
}

async function follow(api: { url: string; token: string }, commit: string, say: (line: string) => void): Promise<number> {
  const ac = new AbortController();
  const res = await fetch(`${api.url}/api/events?commit=${commit}`, { headers: { authorization: `Bearer ${api.token}` }, signal: ac.signal });
  if (!res.ok || !res.body) {
    say(`failed to follow the deploy: the controller answered HTTP ${res.status}`);
    return 0;
  }
  await callController(api, 'POST', '/api/reconcile?trigger=push');
  say(`the controller is reconciling ${commit.slice(0, 12)}`);
  const started = Date.now();
  let lastLine = Date.now();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let sep: number;
      while ((sep = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, sep);
        buf = buf.slice(sep + 2);
        const data = frame.split('\n').find((l) => l.startsWith('data: '))?.slice(6);
        if (!data) continue;
        const envelope = JSON.parse(data) as Envelope;
        const e = envelope.event;
        if (e.kind === 'heartbeat') {
          if (Date.now() - lastLine >= QUIET_MS) {
            say(`… still working (${Math.round((Date.now() - started) / 1000)} s)`);
            lastLine = Date.now();
          }
          continue;
        }
        const line = describeEvent(e);
        if (line) {
          say(envelope.machine ? `${envelope.machine}: ${line}` : line);
          lastLine = Date.now();
        }
        // A machine's verdict in a repository of several (its envelope names it) is one step of the rollout, which ends it.
        const done =
          (e.kind === 'reconciled' && e.commit === commit && !envelope.machine) ||
          (e.kind === 'rolled-out' && e.commit === commit) ||
          (e.kind === 'superseded' && e.commit === commit) ||
          (e.kind === 'noticed' && e.commit === commit && (e.queued === 'quarantined' || e.queued === 'paused'));
        if (done) {
          ac.abort();
          return 0;
        }
      }
    }
  } catch (err) {
    if (!ac.signal.aborted) say(`lost the controller's event stream: ${describe(err)}; \`ramboot status\` shows the outcome`);
  }
  return 0;
}
