import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REASON } from '../../deploy/verdict.js';
import { parseConfig } from '../../lib/config.js';
import { STATE_ROOT, machineKey, originOf } from '../../controller/state.js';
import { trustAfterPromotion } from '../../controller/trust.js';
import { startController, type RunningController } from '../helpers/controller.js';
import { startGitHttp } from '../helpers/git-http.js';
import { freePort, ramboot, tempDir } from '../helpers/ramboot.js';

// The controller's trust settings against commits that try to change them: real git
// repositories, real SSH signatures (ssh-keygen), the real `ramboot up` process. The
// machine is an address where nothing listens, and every build fails at once (its
// minirootfs does not exist): what is under test is what gets verified and built, not a deploy.

let dir: string;
let signers: string;
let alice: string;
let cache: string;

const ZEROS = '0'.repeat(128);

function yaml(host: string, extra = ''): string {
  return [
    `host: { name: ${host}, address: 127.0.0.1, port: 1 }`,
    `distro: { name: alpine, minirootfs: { url: ./missing-minirootfs.tar.gz, sha512: "${ZEROS}" } }`,
    extra,
  ].join('\n');
}

async function newRepo(): Promise<{ repo: string; git: (args: string[], env?: Record<string, string>) => Promise<string>; commit: (config: string, message: string, sign?: boolean) => Promise<string> }> {
  const repo = join(tempDir('trust'), 'nas');
  await execa('git', ['init', '-q', '-b', 'main', repo]);
  const git = async (args: string[], env: Record<string, string> = {}) =>
    (await execa('git', ['-c', 'user.name=Alice', '-c', 'user.email=alice@example.org', ...args], { cwd: repo, env: { ...process.env, ...env } })).stdout.trim();
  const commit = async (config: string, message: string, sign = true) => {
    writeFileSync(join(repo, 'ramboot.yaml'), `${config}\n`);
    writeFileSync(join(repo, 'packages'), 'busybox\n');
    await git(['add', '-A']);
    await git([...(sign ? ['-c', 'gpg.format=ssh', '-c', `user.signingkey=${alice}`, 'commit', '-S'] : ['commit']), '-q', '--allow-empty', '-m', message]);
    return git(['rev-parse', 'HEAD']);
  };
  return { repo, git, commit };
}

/** The state directory `ramboot up --repo REPO` uses when no --state is given. */
const defaultState = (repo: string) => join(STATE_ROOT, machineKey(originOf(repo)));

/** A journal that says the machine runs this commit (what a promoted deploy leaves). */
function promoted(stateDir: string, commit: string): void {
  mkdirSync(stateDir, { recursive: true });
  const line = { step: 'verdict', ts: new Date().toISOString(), deploy: 'earlier', outcome: { verdict: 'promoted', reason: REASON.HEALTHY, message: 'promoted' }, buildId: 'b-earlier', commit };
  writeFileSync(join(stateDir, 'deploy.jsonl'), `${JSON.stringify(line)}\n`);
}

const env = () => ({ RAMBOOT_STATE: '', RAMBOOT_CACHE: cache, RAMBOOT_IDENTITY: '' });

async function up(repo: string, args: string[] = []): Promise<RunningController> {
  return startController(['--repo', repo, ...args], { state: '', listen: await freePort(), env: env(), logFile: join(dir, `up-${Date.now()}.log`) });
}

beforeAll(async () => {
  dir = tempDir('trust-keys');
  cache = join(dir, 'cache');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice', '-f', join(dir, 'alice')]);
  alice = join(dir, 'alice');
  signers = join(dir, 'allowed_signers');
  writeFileSync(signers, `alice@example.org ${readFileSync(`${alice}.pub`, 'utf8').trim()}\n`);
});

const made: string[] = [];
afterAll(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

describe('the state directory and the signing policy come from how the controller was started', () => {
  it('a restart after an unsigned commit that changes host.name builds nothing: the policy in force refuses it', async () => {
    const { repo, commit } = await newRepo();
    made.push(defaultState(repo));
    const signed = await commit(yaml('nas', `watch: { signers: ${signers} }`), 'signed, with a signing policy');
    const first = await up(repo);
    try {
      const s = await first.status();
      expect(s.signing).toEqual({ required: true, signers });
      await first.waitFor(signed, 60_000);
    } finally {
      await first.kill('SIGTERM');
    }
    const unsigned = await commit(yaml('evil'), 'unsigned: another host.name, no watch.signers', false);
    // Started again as before: the same state directory, the same policy, and the head fails it.
    const r = await ramboot(['up', '--repo', repo, '--listen', `127.0.0.1:${await freePort()}`], env());
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`commit ${unsigned.slice(0, 12)} of branch main does not pass the signing policy \\(the commit is not signed\\)`));
    expect(readdirSync(STATE_ROOT).filter((n) => n.startsWith('evil-'))).toEqual([]);
    const images = join(defaultState(repo), 'images');
    expect(existsSync(images) ? readdirSync(images) : []).toEqual([]);
  });

  it('a signing policy given once with --signers stays in force when the controller is started again without it', async () => {
    const { repo, commit } = await newRepo();
    made.push(defaultState(repo));
    await commit(yaml('nas'), 'signed, no watch.signers');
    const first = await up(repo, ['--signers', signers]);
    await first.kill('SIGTERM');
    const again = await up(repo);
    try {
      expect((await again.status()).signing).toEqual({ required: true, signers });
    } finally {
      await again.kill('SIGTERM');
    }
  });
});

describe('what the controller follows', () => {
  it('the virtual NAS\'s first image is never built from a head that fails the policy', async () => {
    const { repo, commit } = await newRepo();
    made.push(defaultState(repo));
    const unsigned = await commit(yaml('nas').replace(', address: 127.0.0.1, port: 1', ''), 'unsigned, no host.address: the virtual NAS', false);
    const r = await ramboot(['up', '--repo', repo, '--signers', signers, '--listen', `127.0.0.1:${await freePort()}`], env());
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`commit ${unsigned.slice(0, 12)} of branch main does not pass the signing policy`));
    expect(r.stderr).not.toMatch(/minirootfs/);
    expect(existsSync(join(defaultState(repo), 'vm', 'disk.img'))).toBe(false);
  });

  it('a URL with credentials is refused without echoing them; a plain http:// remote without signing needs --allow-http and is shown as insecure', async () => {
    const root = tempDir('trust-remote');
    const { repo, commit } = await newRepo();
    await commit(yaml('nas'), 'first', false);
    await execa('git', ['clone', '-q', '--bare', repo, join(root, 'nas.git')]);
    const server = await startGitHttp(root);
    try {
      const withToken = server.url('nas.git').replace('http://', 'http://nas:tok-5e1f@');
      const token = await ramboot(['up', '--url', withToken, '--listen', `127.0.0.1:${await freePort()}`], env());
      expect(token.exitCode).not.toBe(0);
      expect(token.stderr).toMatch(/credentials in the URL are visible to every user of this host \(ps\); put USER:TOKEN in a file .* --credentials FILE/);
      expect(token.stderr).not.toContain('tok-5e1f');

      const plain = await ramboot(['up', '--url', server.url('nas.git'), '--listen', `127.0.0.1:${await freePort()}`], env());
      expect(plain.exitCode).not.toBe(0);
      expect(plain.stderr).toMatch(/a plain http:\/\/ remote without signed commits lets anyone on the network path choose what the machine runs; .* --allow-http/);

      made.push(join(STATE_ROOT, machineKey(originOf(server.url('nas.git')))));
      const c = await startController(['--url', server.url('nas.git'), '--allow-http'], { state: '', listen: await freePort(), env: env(), logFile: join(dir, 'up-http.log') });
      try {
        expect((await c.status()).insecure).toMatch(/plain http:\/\/ remote without signed commits/);
      } finally {
        await c.kill('SIGTERM');
      }
    } finally {
      await server.stop();
    }
  });
});

describe('no downgrade: a new head must descend from the running build', () => {
  it('with signing, a force push back to an older signed commit is refused and nothing is built; `ramboot release` accepts it', async () => {
    const { repo, git, commit } = await newRepo();
    const state = defaultState(repo);
    made.push(state);
    const older = await commit(yaml('nas'), 'older, signed');
    const running = await commit(yaml('nas', '# newer'), 'newer, signed: what the machine runs');
    promoted(state, running);
    await git(['reset', '-q', '--hard', older]);
    const c = await up(repo, ['--signers', signers]);
    try {
      const r = await c.waitFor(older, 60_000);
      expect(r.reason).toBe(REASON.NOT_DESCENDANT);
      expect(r.message).toMatch(new RegExp(`not a descendant of the running build \\(${running.slice(0, 12)}\\).*nothing was built`));
      expect(r.phases.map((p) => p.name)).not.toContain('build');
      expect(existsSync(join(state, 'images')) ? readdirSync(join(state, 'images')) : []).toEqual([]);
      expect((await c.status()).quarantine.map((q) => q.commit)).toContain(older);

      const released = await ramboot(['release', older, '--repo', repo], env());
      expect(released.exitCode).toBe(0);
      const forced = await c.waitFor(older, 60_000, (x) => x.state === 'done' && x.trigger.kind === 'release');
      expect(forced.phases.map((p) => p.name)).toContain('build');
      expect(forced.rewritten).toEqual({ from: running });
    } finally {
      await c.kill('SIGTERM');
    }
  });

  it('without signing, a branch moved back still deploys, and the record says it was rewritten and from what', async () => {
    const { repo, git, commit } = await newRepo();
    const state = defaultState(repo);
    made.push(state);
    const older = await commit(yaml('nas'), 'older', false);
    const running = await commit(yaml('nas', '# newer'), 'newer: what the machine runs', false);
    promoted(state, running);
    await git(['reset', '-q', '--hard', older]);
    const c = await up(repo);
    try {
      const r = await c.waitFor(older, 60_000);
      expect(r.rewritten).toEqual({ from: running });
      expect(r.phases.map((p) => p.name)).toContain('build');
      expect(r.message).toMatch(new RegExp(`the branch was rewritten: ${older.slice(0, 12)} does not descend from ${running.slice(0, 12)}`));
    } finally {
      await c.kill('SIGTERM');
    }
  });
});

describe('trustAfterPromotion: what a promoted commit changes in the trust settings', () => {
  const config = (extra: string) => parseConfig(`host: { name: nas }\n${extra}\n`, 'ramboot.yaml');
  const now = { signers: '/etc/ramboot/signers', branch: 'main', followed: 'main', signersGiven: false, branchGiven: false };
  const table: [string, string, Partial<typeof now>, { signers?: string; branch?: string }, RegExp | undefined][] = [
    ['a commit without watch.signers after signed ones does not switch signing off', '', {}, {}, /signing stays required \(\/etc\/ramboot\/signers\)/],
    ['a new signers file named by a trusted commit becomes the policy', 'watch: { signers: /etc/ramboot/new }', {}, { signers: '/etc/ramboot/new' }, undefined],
    ['--signers fixes the policy: a commit does not change it', 'watch: { signers: /etc/ramboot/new }', { signersGiven: true }, {}, undefined],
    ['watch.branch of a trusted commit is followed from the next start', 'watch: { branch: production, signers: /etc/ramboot/signers }', {}, { branch: 'production' }, /followed from the next start/],
    ['--branch fixes the branch', 'watch: { branch: production, signers: /etc/ramboot/signers }', { branchGiven: true }, {}, undefined],
  ];
  it.each(table)('%s', (_name, extra, over, update, note) => {
    const r = trustAfterPromotion('c0ffee'.padEnd(40, '0'), config(extra), { ...now, ...over });
    expect(r.update).toEqual(update);
    if (note) expect(r.notes.join('\n')).toMatch(note);
    else expect(r.notes.filter((n) => /signing/.test(n))).toEqual([]);
  });
});
