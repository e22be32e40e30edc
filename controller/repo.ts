import * as fs from 'node:fs';
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import git, { type AuthCallback } from 'isomorphic-git';
import http from 'isomorphic-git/http/node';
import { RambootError, TransientError, UsageError } from '../lib/errors.js';
import { readPrivateFile } from '../lib/private-file.js';
import { describeFetchError, isNetworkFault, redactUrl } from '../lib/net.js';

// The repository the controller follows: a local one (a working tree, or the bare
// repository people push to), read in place; or an HTTP(S) remote, mirrored into the
// state directory. Both answer the same question cheaply: which commit is the branch at?

export interface CommitInfo {
  oid: string;
  author: string;
  authorEmail: string;
  committerEmail: string;
  subject: string;
  time: number;
}

export interface Repo {
  /** What a person calls it: the path or URL. */
  label: string;
  branch: string;
  /** Where the builder reads commits from (a git directory). */
  gitdir: string;
  /** The branch's commit now; for a remote, fetched into the mirror first when it moved. */
  head(): Promise<string>;
  info(oid: string): Promise<CommitInfo>;
  /** The raw commit object: what an SSH signature covers. */
  rawCommit(oid: string): Promise<Buffer>;
}

export function gitdirOf(path: string): string {
  if (existsSync(join(path, '.git'))) return join(path, '.git');
  if (existsSync(join(path, 'HEAD')) && existsSync(join(path, 'objects'))) return path;
  throw new UsageError(`failed to open repository ${path}: not a git repository (no .git, not bare)`, { step: 'open repository', input: path });
}

async function commitInfo(gitdir: string, oid: string): Promise<CommitInfo> {
  const { commit } = await git.readCommit({ fs, gitdir, oid });
  return {
    oid,
    author: commit.author.name,
    authorEmail: commit.author.email,
    committerEmail: commit.committer.email,
    subject: commit.message.split('\n')[0] ?? '',
    time: commit.committer.timestamp,
  };
}

async function rawCommit(gitdir: string, oid: string): Promise<Buffer> {
  const { object } = await git.readObject({ fs, gitdir, oid, format: 'content' });
  return Buffer.from(object as Uint8Array);
}

export function localRepo(path: string, branch: string): Repo {
  const gitdir = gitdirOf(path);
  return {
    label: path,
    branch,
    gitdir,
    async head() {
      try {
        return await git.resolveRef({ fs, gitdir, ref: `refs/heads/${branch}` });
      } catch {
        throw new UsageError(`failed to find branch ${branch} in ${path}: no such branch (set watch.branch in ramboot.yaml, or --branch)`, {
          step: 'resolve branch',
          input: branch,
        });
      }
    },
    info: (oid) => commitInfo(gitdir, oid),
    rawCommit: (oid) => rawCommit(gitdir, oid),
  };
}

/**
 * A remote over HTTP(S): `listServerRefs` asks for the one branch (cheap); only when it
 * moved is it fetched, into a bare mirror whose branch ref then names the new commit, so
 * the next fetch sends only what is new. A force-push is followed like any other move.
 */
export function remoteRepo(url: string, branch: string, mirrorDir: string, onAuth?: AuthCallback): Repo {
  const ref = `refs/heads/${branch}`;
  // A URL may carry a token (https://user:token@host/…): it is used for requests only,
  // never shown, kept in the mirror's config or put in a message.
  const shown = redactUrl(url);
  const ensureMirror = async () => {
    if (existsSync(join(mirrorDir, 'HEAD'))) {
      // A mirror made before URLs were kept without their credentials.
      await git.setConfig({ fs, gitdir: mirrorDir, path: 'remote.origin.url', value: shown });
      return;
    }
    mkdirSync(mirrorDir, { recursive: true });
    await git.init({ fs, gitdir: mirrorDir, bare: true, defaultBranch: branch });
    await git.addRemote({ fs, gitdir: mirrorDir, remote: 'origin', url: shown });
  };
  const why = (err: unknown) => describeFetchError(err).split(url).join(shown);
  const unreachable = (err: unknown) =>
    // Our own errors (the credentials file refused) say what to fix already.
    err instanceof RambootError
      ? err
      : isNetworkFault(err)
      ? new TransientError(`failed to reach ${shown}: ${why(err)}; retrying at the next poll`, { step: 'poll', input: shown }, { cause: err })
      : new UsageError(`failed to read ${shown}: ${why(err)} (is --url the repository's address?)`, { step: 'poll', input: shown }, { cause: err });
  return {
    label: shown,
    branch,
    gitdir: mirrorDir,
    async head() {
      await ensureMirror();
      let refs;
      try {
        refs = await git.listServerRefs({ http, url, prefix: ref, protocolVersion: 2, onAuth });
      } catch (err) {
        throw unreachable(err);
      }
      const remote = refs.find((r) => r.ref === ref)?.oid;
      if (!remote) {
        throw new UsageError(`failed to find branch ${branch} at ${shown}: the remote has no ${ref} (set watch.branch in ramboot.yaml, or --branch)`, {
          step: 'resolve branch',
          input: shown,
        });
      }
      const local = await git.resolveRef({ fs, gitdir: mirrorDir, ref }).catch(() => undefined);
      if (local === remote) return remote;
      try {
        await git.fetch({ fs, http, gitdir: mirrorDir, remote: 'origin', url, ref: branch, remoteRef: branch, singleBranch: true, tags: false, onAuth });
      } catch (err) {
        throw unreachable(err);
      }
      await git.writeRef({ fs, gitdir: mirrorDir, ref, value: remote, force: true });
      return remote;
    },
    info: (oid) => commitInfo(mirrorDir, oid),
    rawCommit: (oid) => rawCommit(mirrorDir, oid),
  };
}

export function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

/**
 * Where a remote's credentials come from, never the command line (every local user reads
 * it): a file of USER:TOKEN only root can read, else $RAMBOOT_GIT_USERNAME and
 * $RAMBOOT_GIT_PASSWORD, else git's credential helper (`git credential fill`, no prompt).
 */
export function credentialsFor(file: string | undefined, env: NodeJS.ProcessEnv = process.env): AuthCallback {
  return async (url) => {
    if (file) {
      const text = readPrivateFile(resolve(file), 'the credentials file').trim();
      const sep = text.indexOf(':');
      return sep < 0 ? { username: 'git', password: text } : { username: text.slice(0, sep), password: text.slice(sep + 1) };
    }
    if (env.RAMBOOT_GIT_PASSWORD) return { username: env.RAMBOOT_GIT_USERNAME ?? 'git', password: env.RAMBOOT_GIT_PASSWORD };
    const u = new URL(url);
    const r = await execa('git', ['credential', 'fill'], {
      input: `protocol=${u.protocol.replace(':', '')}\nhost=${u.host}\npath=${u.pathname.replace(/^\//, '')}\n\n`,
      env: { GIT_TERMINAL_PROMPT: '0', GIT_ASKPASS: '' },
      reject: false,
    });
    const field = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(r.stdout)?.[1];
    return r.exitCode === 0 && field('password') ? { username: field('username') ?? '', password: field('password')! } : { cancel: true };
  };
}
