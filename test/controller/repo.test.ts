import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentialsFor, localRepo, remoteRepo } from '../../controller/repo.js';
import { startGitHttp, type GitHttp } from '../helpers/git-http.js';

// The repositories the controller follows: a remote over real smart HTTP (git
// http-backend), polled cheaply and fetched only when its branch moved; a local one.

let root: string;
let work: string;
let server: GitHttp;

const git = (args: string[], cwd = work) => execa('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd });

async function commitAndPush(message: string, force = false): Promise<string> {
  writeFileSync(join(work, 'file'), `${message}\n`);
  await git(['add', 'file']);
  await git(['commit', '-q', '-m', message]);
  await git(['push', '-q', ...(force ? ['--force'] : []), server.url('nas.git'), 'HEAD:main']);
  return (await git(['rev-parse', 'HEAD'])).stdout.trim();
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ramboot-remote-'));
  await execa('git', ['init', '-q', '--bare', '-b', 'main', join(root, 'nas.git')]);
  await execa('git', ['--git-dir', join(root, 'nas.git'), 'config', 'http.receivepack', 'true']);
  work = mkdtempSync(join(tmpdir(), 'ramboot-work-'));
  await git(['init', '-q', '-b', 'main']);
  server = await startGitHttp(root);
});
afterAll(async () => {
  await server?.stop();
});

describe('a remote over HTTP', () => {
  it('follows the branch: fetches when it moved, only asks when it did not', async () => {
    const first = await commitAndPush('one');
    const repo = remoteRepo(server.url('nas.git'), 'main', join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git'));
    expect(await repo.head()).toBe(first);
    expect((await repo.info(first)).subject).toBe('one');
    server.requests.length = 0;
    expect(await repo.head()).toBe(first);
    // One ref listing, no pack: nothing is downloaded when nothing changed.
    expect(server.requests.filter((r) => r.startsWith('POST'))).toEqual(['POST /nas.git/git-upload-pack']);
    const second = await commitAndPush('two');
    expect(await repo.head()).toBe(second);
    expect((await repo.info(second)).subject).toBe('two');
  });

  it('follows a force-push like any other move', async () => {
    const repo = remoteRepo(server.url('nas.git'), 'main', join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git'));
    await commitAndPush('before the rewrite');
    await repo.head();
    await git(['reset', '-q', '--hard', 'HEAD~1']);
    const rewritten = await commitAndPush('rewritten', true);
    expect(await repo.head()).toBe(rewritten);
  });

  it('a branch the remote does not have is a clear error naming it', async () => {
    const repo = remoteRepo(server.url('nas.git'), 'production', join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git'));
    await expect(repo.head()).rejects.toThrow(/failed to find branch production at http:\/\/127.0.0.1:\d+\/nas.git: the remote has no refs\/heads\/production/);
  });

  it('a remote that is down is "retry later", saying the connection was refused', async () => {
    const repo = remoteRepo(server.url('nas.git'), 'main', join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git'));
    await server.down();
    try {
      const err = await repo.head().then(() => undefined, (e: unknown) => e as { kind: string; message: string });
      expect(err?.kind).toBe('retry');
      expect(err?.message).toMatch(/failed to reach http:\/\/127.0.0.1:\d+\/nas.git: the connection was refused/);
    } finally {
      await server.up();
    }
  });
});

describe('a remote whose URL carries a token', () => {
  it('sends it, and shows, keeps and reports the URL without it', async () => {
    const token = 'tok-3f9c2a7b1e';
    const privateServer = await startGitHttp(root, { user: 'nas', password: token });
    const mirror = join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git');
    try {
      const secret = privateServer.url('nas.git').replace('http://', `http://nas:${token}@`);
      const head = await remoteRepo(secret, 'main', mirror).head();
      expect(head).toBe((await git(['rev-parse', 'HEAD'])).stdout.trim());
      const repo = remoteRepo(secret, 'production', mirror);
      expect(repo.label).toBe(privateServer.url('nas.git'));
      const err = await repo.head().then(() => undefined, (e: unknown) => e as Error);
      expect(err?.message).toMatch(/failed to find branch production at http:\/\/127.0.0.1:\d+\/nas.git:/);
      expect(JSON.stringify({ message: err?.message, input: (err as { input?: string }).input })).not.toContain(token);
      expect(readFileSync(join(mirror, 'config'), 'utf8')).not.toContain(token);
      const refused = remoteRepo(privateServer.url('nas.git').replace('http://', 'http://nas:wrong@'), 'main', join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git'));
      const denied = await refused.head().then(() => undefined, (e: unknown) => e as Error);
      expect(denied?.message).toMatch(/failed to read http:\/\/127.0.0.1:\d+\/nas.git: /);
      expect(JSON.stringify({ message: denied?.message, input: (denied as { input?: string }).input })).not.toContain('wrong');
    } finally {
      await privateServer.stop();
    }
  });
});

describe('a remote\'s credentials, never on the command line', () => {
  it('come from a file only root can read, from the environment, or from git\'s credential helper', async () => {
    const token = 'tok-9d1e77';
    const privateServer = await startGitHttp(root, { user: 'nas', password: token });
    const mirror = () => join(mkdtempSync(join(tmpdir(), 'ramboot-mirror-')), 'm.git');
    const expected = (await git(['rev-parse', 'HEAD'])).stdout.trim();
    try {
      const file = join(mkdtempSync(join(tmpdir(), 'ramboot-cred-')), 'credentials');
      writeFileSync(file, `nas:${token}\n`, { mode: 0o600 });
      expect(await remoteRepo(privateServer.url('nas.git'), 'main', mirror(), credentialsFor(file, {})).head()).toBe(expected);

      chmodSync(file, 0o644);
      const open = await remoteRepo(privateServer.url('nas.git'), 'main', mirror(), credentialsFor(file, {})).head().then(() => undefined, (e: unknown) => e as Error);
      expect(open?.message).toMatch(/^failed to read the credentials file .*credentials: it is open to other users \(mode 0644\); make it private with `chmod 600 /);

      const env = { RAMBOOT_GIT_USERNAME: 'nas', RAMBOOT_GIT_PASSWORD: token };
      expect(await remoteRepo(privateServer.url('nas.git'), 'main', mirror(), credentialsFor(undefined, env)).head()).toBe(expected);

      // git's credential store, as `git config credential.helper store` keeps it for a user.
      const home = mkdtempSync(join(tmpdir(), 'ramboot-home-'));
      writeFileSync(join(home, '.git-credentials'), `http://nas:${token}@127.0.0.1:${privateServer.port}\n`, { mode: 0o600 });
      writeFileSync(join(home, '.gitconfig'), '[credential]\n\thelper = store\n');
      const saved = process.env.HOME;
      process.env.HOME = home;
      try {
        expect(await remoteRepo(privateServer.url('nas.git'), 'main', mirror(), credentialsFor(undefined, {})).head()).toBe(expected);
      } finally {
        process.env.HOME = saved;
      }
    } finally {
      await privateServer.stop();
    }
  });
});

describe('a local repository', () => {
  it('reads the branch from the git directory, without a checkout', async () => {
    const head = (await git(['rev-parse', 'HEAD'])).stdout.trim();
    expect(await localRepo(work, 'main').head()).toBe(head);
    await expect(localRepo(work, 'nope').head()).rejects.toThrow(/failed to find branch nope in .*: no such branch/);
  });
});
