import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BuildError } from '../lib/errors.js';
import type { RunResult } from '../lib/run.js';
import { lstatOf } from './skeleton.js';
import { BUILD_ENV, runStep, type Work } from './work.js';

// The repository's code (setup.sh, the Go programs' build, the package manager of a
// minirootfs the commit names) runs as root, but in a bubblewrap sandbox: its own mount,
// PID, IPC, UTS and (unless asked for) network namespaces, a fresh /proc, a minimal
// /dev, no /sys, only the directories bound here, a clean environment, and a reduced set
// of capabilities. Nothing of the build host (its processes, disks, the controller's
// identity or environment) is reachable from inside. bwrap's own mounts live in the
// sandbox's mount namespace: they end with it, even when ramboot is killed.

/** This module's code is part of the package stage's recipe (it runs the package manager). */
export const SANDBOX_SOURCE = import.meta.url;

/**
 * What a package install and setup.sh need as root (chown to other users, set file
 * capabilities, su/adduser, chroot): no more. Dropped notably: SYS_ADMIN (mount),
 * MKNOD, SYS_PTRACE, SYS_MODULE, SYS_RAWIO, DAC_READ_SEARCH, NET_ADMIN. bwrap sets
 * no_new_privs, so no setuid program brings the rest back.
 */
export const SANDBOX_CAPS = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_SETUID',
  'CAP_SETGID',
  'CAP_SETFCAP',
  'CAP_KILL',
  'CAP_NET_BIND_SERVICE',
  'CAP_AUDIT_WRITE',
  'CAP_SYS_CHROOT',
] as const;

/** Proxy settings are the one part of the builder's environment the sandbox sees. */
const PROXY_VARS = ['http_proxy', 'https_proxy', 'no_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY'];

export const SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A host path made visible inside the sandbox. */
export interface Bind {
  source: string;
  target: string;
  readOnly?: boolean;
}

export interface Sandbox {
  /** Bound at / (read-write); every other bind goes on top of it. */
  root?: string;
  binds?: Bind[];
  /** Symlinks made inside (e.g. /bin -> usr/bin when only /usr is bound). */
  symlinks?: { target: string; path: string }[];
  /** A fresh tmpfs at these paths. */
  tmpfs?: string[];
  network: boolean;
  /** Variables beyond PATH, HOME, the build's locale and time zone and the proxies. */
  env?: Record<string, string>;
  cwd?: string;
}

/** The bwrap command line that runs argv in the sandbox. */
function bwrapArgs(box: Sandbox, argv: string[]): string[] {
  const env: Record<string, string> = { PATH: SANDBOX_PATH, HOME: '/root', ...BUILD_ENV, ...proxies(), ...box.env };
  return [
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    ...(box.network ? [] : ['--unshare-net']),
    // The host's name is no part of the image (and the same commit gives the same bytes).
    '--hostname', 'ramboot-build',
    '--die-with-parent',
    '--new-session',
    // bwrap writes the sandbox's first process there: see stopSandbox.
    '--info-fd', '3',
    ...(box.root ? ['--bind', box.root, '/'] : []),
    ...(box.binds ?? []).flatMap((b) => [b.readOnly ? '--ro-bind' : '--bind', b.source, b.target]),
    ...(box.symlinks ?? []).flatMap((s) => ['--symlink', s.target, s.path]),
    ...(box.tmpfs ?? []).flatMap((t) => ['--tmpfs', t]),
    '--proc', '/proc',
    '--dev', '/dev',
    '--cap-drop', 'ALL',
    ...SANDBOX_CAPS.flatMap((c) => ['--cap-add', c]),
    '--clearenv',
    ...Object.entries(env).flatMap(([k, v]) => ['--setenv', k, v]),
    '--chdir', box.cwd ?? '/',
    '--',
    ...argv,
  ];
}

/** Runs argv in the sandbox as a step of the build, stopped by the work's signal. */
export async function runSandboxed(work: Work, box: Sandbox, argv: string[], opts: { step: string; input?: string }): Promise<RunResult> {
  if (box.root) requireMountPoints(box.root, [...(box.binds ?? []).map((b) => b.target), ...(box.tmpfs ?? []), '/proc', '/dev'], opts.step);
  return runStep(work, 'bwrap', bwrapArgs(box, argv), { ...opts, extendEnv: false, env: { PATH: SANDBOX_PATH }, stopWith: stopSandbox });
}

/**
 * A stop is SIGKILL to the sandbox's first process, PID 1 of its namespace: the kernel
 * then ends every process in it. Signalling bwrap instead leaves a window in its
 * start-up where the sandbox outlives it (its first process waits, forever, for a word
 * from the bwrap that died), holding the build's mounts and output open. bwrap itself is
 * never signalled, so it always gets to name that process; a stop that comes earlier
 * waits for the name.
 */
function stopSandbox(child: { fd3: NodeJS.ReadableStream }): () => void {
  let info = '';
  let pid: number | undefined;
  let stopped = false;
  const kill = () => {
    try {
      process.kill(pid!, 'SIGKILL');
    } catch {
      // The sandbox has ended already.
    }
  };
  child.fd3.on('data', (chunk: Buffer) => {
    info += chunk.toString();
    const m = /"child-pid":\s*(\d+)/.exec(info);
    if (m && pid === undefined) {
      pid = Number(m[1]);
      if (stopped) kill();
    }
  });
  return () => {
    stopped = true;
    if (pid !== undefined) kill();
  };
}

/**
 * Every mount point is a real directory of the root; a missing one is made here (0755,
 * as bwrap would). A symlink on the way (root/ or a minirootfs can carry `dev -> /etc`)
 * is never followed onto the host: bwrap refuses it with "Can't mount … No such file or
 * directory", and ramboot says first which path of the image is wrong and why.
 */
function requireMountPoints(root: string, targets: string[], step: string): void {
  for (const target of targets) {
    let path = root;
    for (const part of target.split('/').filter(Boolean)) {
      path = join(path, part);
      const st = lstatOf(path);
      if (!st) {
        mkdirSync(path);
        chmodSync(path, 0o755);
      } else if (!st.isDirectory()) {
        const what = st.isSymbolicLink() ? 'a symlink' : 'not a directory';
        throw new BuildError(
          `failed to ${step}: ${path.slice(root.length)} in the new root is ${what}, and the sandbox mounts ${target} there; keep it a directory (in root/ and in the packages)`,
          { step, input: target },
        );
      }
    }
  }
}

function proxies(): Record<string, string> {
  return Object.fromEntries(PROXY_VARS.flatMap((v) => (process.env[v] ? [[v, process.env[v]!]] : [])));
}
