import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { ramboot, tempDir } from '../helpers/ramboot.js';

// The push gate as git runs it: `ramboot hook install` into a real bare repository, real
// `git push` from a clone (the pre-receive hook runs with the pushed objects in
// quarantine), real age keys and SSH signatures.

let dir: string;
let alice: string;
let signers: string;
let controllerKey: string;

let controllerRecipient: string;
const yaml = (recipient = controllerRecipient, extra = '') => `host: { name: nas, address: 127.0.0.1 }\nsecrets: { recipients: ["${recipient}"]${extra} }\n`;
const HOST_KEY = 'secrets/etc/ssh/ssh_host_ed25519_key.age';

/** The machine's SSH host key, encrypted to the recipient (every repository has one: the controller pins it). */
async function hostKey(work: string, recipient = controllerRecipient): Promise<void> {
  const key = join(tempDir('hostkey'), 'key');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  mkdirSync(join(work, 'secrets/etc/ssh'), { recursive: true });
  await execa('age', ['-r', recipient, '-o', join(work, HOST_KEY), key]);
}

async function setup(hookArgs: string[] = []) {
  const root = tempDir('hooks');
  const bare = join(root, 'nas.git');
  const work = join(root, 'work');
  await execa('git', ['init', '-q', '--bare', '-b', 'main', bare]);
  const installed = await ramboot(['hook', 'install', bare, '--state', join(root, 'state'), ...hookArgs]);
  expect(installed.exitCode, installed.stderr).toBe(0);
  await execa('git', ['init', '-q', '-b', 'main', work]);
  const git = async (args: string[], env: Record<string, string> = {}) =>
    execa('git', ['-c', 'user.name=Alice', '-c', 'user.email=alice@example.org', '-c', 'gpg.format=ssh', '-c', `user.signingkey=${alice}`, ...args], {
      cwd: work,
      env: { ...process.env, ...env },
      reject: false,
    });
  const commit = async (message: string, sign = true) => {
    await git(['add', '-A']);
    await git(['commit', ...(sign ? ['-S'] : []), '-q', '--allow-empty', '-m', message]);
    return (await git(['rev-parse', 'HEAD'])).stdout.trim();
  };
  // The controller's own identity, as the hook finds it in the pusher's environment.
  const push = (args: string[] = [], identity = controllerKey) => git(['push', ...args, bare, 'HEAD:main'], { RAMBOOT_IDENTITY: identity, HOME: root });
  writeFileSync(join(work, 'ramboot.yaml'), yaml());
  writeFileSync(join(work, 'packages'), 'busybox\n');
  await hostKey(work);
  return { bare, work, git, commit, push };
}

beforeAll(async () => {
  dir = tempDir('hooks-keys');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice', '-f', join(dir, 'alice')]);
  alice = join(dir, 'alice');
  signers = join(dir, 'allowed_signers');
  writeFileSync(signers, `alice@example.org ${readFileSync(`${alice}.pub`, 'utf8').trim()}\n`);
  controllerKey = join(dir, 'controller.age');
  await execa('age-keygen', ['-o', controllerKey]);
  controllerRecipient = (await execa('age-keygen', ['-y', controllerKey])).stdout.trim();
});

describe('the pre-receive gate', () => {
  it('refuses a push that brings its own identity in secrets.identity: the secrets must decrypt with the controller\'s', async () => {
    const { work, commit, push } = await setup();
    await commit('first');
    expect((await push()).exitCode).toBe(0);
    const own = join(work, 'mine.key');
    await execa('age-keygen', ['-o', own]);
    const recipient = (await execa('age-keygen', ['-y', own])).stdout.trim();
    await hostKey(work, recipient);
    writeFileSync(join(work, 'ramboot.yaml'), yaml(recipient, ', identity: mine.key'));
    await commit('secrets only the pusher can read, and the pusher\'s key');
    // A controller host whose identity comes from secrets.identity (no $RAMBOOT_IDENTITY).
    const r = await push([], '');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/ramboot: refusing the push: .*failed to load identity/);
    expect(r.stderr).toContain('remote rejected');
  });

  it('refuses secrets -> /etc without listing the host\'s files', async () => {
    const { work, commit, push } = await setup();
    rmSync(join(work, 'secrets'), { recursive: true });
    symlinkSync('/etc', join(work, 'secrets'));
    await commit('secrets is a link to /etc');
    const r = await push();
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/refusing the push: .*secrets: a symbolic link where ramboot reads files of the repository/);
    for (const hostFile of ['passwd', 'shadow', 'hostname', 'os-release']) expect(r.stderr).not.toContain(hostFile);
  });

  it('with signed commits required, refuses a force push back to an older signed commit and sets receive.denyNonFastForwards', async () => {
    const { bare, git, commit, push } = await setup(['--signers', signers]);
    const older = await commit('older, signed');
    expect((await push()).exitCode).toBe(0);
    await commit('newer, signed');
    expect((await push()).exitCode).toBe(0);
    expect((await execa('git', ['--git-dir', bare, 'config', 'receive.denyNonFastForwards'])).stdout.trim()).toBe('true');
    await git(['reset', '-q', '--hard', older]);
    // Around git's own refusal: the gate refuses it too, against the policy in force at push time.
    await execa('git', ['--git-dir', bare, 'config', 'receive.denyNonFastForwards', 'false']);
    const r = await push(['--force']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`refusing the push: ${older.slice(0, 12)}: not a descendant of [0-9a-f]{12}, which main names now`));
  });

  it('with signed commits required, refuses an unsigned commit and lets a signed one in', async () => {
    const { work, commit, push } = await setup(['--signers', signers]);
    await commit('unsigned', false);
    const refused = await push();
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/untrusted commit: the commit is not signed/);
    writeFileSync(join(work, 'packages'), 'busybox\nopenssh\n');
    await commit('signed');
    const r = await push(['--force']);
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe('the pre-receive gate in a repository of several machines', () => {
  it('checks each machine as it sees the repository: a typo in one machine\'s ramboot.yaml and a secret of its own the controller cannot open are refused, named by machine, file and line', async () => {
    const { work, commit, push } = await setup();
    mkdirSync(join(work, 'machines/a'), { recursive: true });
    mkdirSync(join(work, 'machines/b'), { recursive: true });
    writeFileSync(join(work, 'machines/a/ramboot.yaml'), 'host:\n  name: nas-a\n');
    writeFileSync(join(work, 'machines/b/ramboot.yaml'), 'host:\n  name: nas-b\n');
    await commit('two machines');
    const ok = await push();
    expect(ok.exitCode, ok.stderr).toBe(0);
    writeFileSync(join(work, 'machines/b/ramboot.yaml'), 'host:\n  name: nas-b\n  adress: 192.0.2.9\n');
    // Machine a's own secret, encrypted to a key the controller does not hold.
    const stranger = join(tempDir('hooks-stranger'), 'key');
    await execa('age-keygen', ['-o', stranger]);
    const strangerRecipient = (await execa('age-keygen', ['-y', stranger])).stdout.trim();
    mkdirSync(join(work, 'machines/a/secrets/etc'), { recursive: true });
    await execa('sh', ['-c', `printf 'token\\n' | age -r ${strangerRecipient} -o ${join(work, 'machines/a/secrets/etc/api-token.age')}`]);
    await commit('a typo in b, a secret of a only another key opens');
    const refused = await push();
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/machine b: machines\/b\/ramboot\.yaml, line 3, key host\.adress/);
    expect(refused.stderr).toMatch(/machine a: machines\/a\/secrets\/etc\/api-token\.age: /);
    expect(refused.stderr).not.toMatch(/machine b: .*api-token\.age/);
  });

  for (const [link, what] of [['machines/b/secrets', 'a machine\'s secrets'], ['machines/b', 'a machine\'s directory']] as const) {
    it(`refuses ${what} -> /etc without listing the host's files`, async () => {
      const { work, commit, push } = await setup();
      mkdirSync(join(work, 'machines/a'), { recursive: true });
      writeFileSync(join(work, 'machines/a/ramboot.yaml'), 'host:\n  name: nas-a\n');
      if (link === 'machines/b/secrets') {
        mkdirSync(join(work, 'machines/b'), { recursive: true });
        writeFileSync(join(work, 'machines/b/ramboot.yaml'), 'host:\n  name: nas-b\n');
      }
      symlinkSync('/etc', join(work, link));
      await commit(`${link} is a link to /etc`);
      const r = await push();
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(new RegExp(`refusing the push: .*${link.replace(/\//g, '\\/')}: a symbolic link where ramboot reads files of the repository`));
      for (const hostFile of ['passwd', 'shadow', 'hostname', 'os-release']) expect(r.stderr).not.toContain(hostFile);
    });
  }
});
