import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { localRepo } from '../../controller/repo.js';
import { splitSignedCommit, verifyCommit } from '../../controller/signing.js';

// Signed commits as git makes them (gpg.format=ssh) and ssh-keygen verifies them, read
// back through isomorphic-git the way the controller reads them.

let dir: string;
let repo: string;
let signers: string;
let alice: string;
let mallory: string;

const git = (args: string[], env: Record<string, string> = {}) =>
  execa('git', ['-c', 'user.name=Alice', '-c', 'user.email=alice@example.org', ...args], { cwd: repo, env: { ...process.env, ...env } });

async function commit(message: string, key?: string, email = 'alice@example.org'): Promise<string> {
  writeFileSync(join(repo, 'file'), `${message}\n`);
  await git(['add', 'file']);
  const sign = key ? ['-c', 'gpg.format=ssh', '-c', `user.signingkey=${key}`, 'commit', '-S'] : ['commit'];
  await git([...sign, '-q', '-m', message], { GIT_COMMITTER_EMAIL: email, GIT_AUTHOR_EMAIL: email });
  return (await git(['rev-parse', 'HEAD'])).stdout.trim();
}

async function check(oid: string, file = signers) {
  const r = localRepo(repo, 'main');
  const info = await r.info(oid);
  return verifyCommit(await r.rawCommit(oid), info.committerEmail, file);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ramboot-signing-'));
  repo = join(dir, 'repo');
  await execa('git', ['init', '-q', '-b', 'main', repo]);
  for (const name of ['alice', 'mallory']) await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(dir, name)]);
  alice = join(dir, 'alice');
  mallory = join(dir, 'mallory');
  signers = join(dir, 'allowed_signers');
  writeFileSync(signers, `# who may deploy\nalice@example.org ${readFileSync(`${alice}.pub`, 'utf8').trim()}\n`);
});

describe('SSH-signed commits', () => {
  it('a commit signed by an allowed key, for its committer, verifies', async () => {
    const r = await check(await commit('signed by alice', alice));
    expect(r).toMatchObject({ ok: true, detail: expect.stringMatching(/Good "git" signature for alice@example.org/) });
  });

  it('the signed payload is the commit object without its gpgsig header, as git signs it', async () => {
    const oid = await commit('payload check', alice);
    const raw = (await execa('git', ['cat-file', 'commit', oid], { cwd: repo })).stdout;
    const { payload, signature } = splitSignedCommit(Buffer.from(`${raw}\n`));
    expect(signature).toMatch(/^-----BEGIN SSH SIGNATURE-----\n[\s\S]*-----END SSH SIGNATURE-----$/);
    expect(payload.toString()).not.toContain('gpgsig');
    expect(payload.toString()).toMatch(/^tree [0-9a-f]{40}\nparent [0-9a-f]{40}\nauthor Alice/);
  });

  it('an unsigned commit is refused', async () => {
    expect(await check(await commit('unsigned'))).toEqual({ ok: false, reason: 'the commit is not signed' });
  });

  it('a commit signed by a key the signers file does not list is refused', async () => {
    const r = await check(await commit('signed by mallory', mallory));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/does not verify for alice@example.org/);
  });

  it('a good signature for another principal than the committer is refused', async () => {
    const r = await check(await commit('alice signs, bob commits', alice, 'bob@example.org'));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/does not verify for bob@example.org/);
  });

  it('a signers file that lists nobody is an error, never "allow all"', async () => {
    const empty = join(dir, 'empty_signers');
    writeFileSync(empty, '# nobody yet\n\n');
    const oid = await commit('signed, empty policy', alice);
    await expect(check(oid, empty)).rejects.toThrow(/lists no signer: refusing every commit rather than allowing all/);
  });

  it('a missing signers file is an error naming it', async () => {
    const oid = await commit('signed, no policy', alice);
    await expect(check(oid, join(dir, 'nope'))).rejects.toThrow(/failed to read the allowed-signers file .*nope: ENOENT/);
  });
});
