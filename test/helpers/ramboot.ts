import { execa } from 'execa';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Tests drive the real CLI (dist/, compiled by scripts/setup.sh) as a user would.
export const CLI = new URL('../../dist/controller/cli.js', import.meta.url).pathname;

/** Package stages and base segments are shared by every test of a run: mmdebstrap once. */
export const SHARED_STATE = process.env.RAMBOOT_TEST_STATE ?? '/var/tmp/ramboot-test-state';

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ramboot-${prefix}-`));
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export async function ramboot(args: string[], env: Record<string, string> = {}, input?: string): Promise<CliResult> {
  const r = await execa('node', [CLI, ...args], { reject: false, env: { ...process.env, ...env }, input, stdin: input === undefined ? 'ignore' : 'pipe' });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A machine repository made by `ramboot init`, with its own HOME for the controller's keys. */
export async function initRepo(distro: 'debian' | 'alpine'): Promise<{ repo: string; home: string; env: Record<string, string> }> {
  const root = tempDir('repo');
  const home = join(root, 'home');
  mkdirSync(home);
  const env = { HOME: home, RAMBOOT_IDENTITY: '' };
  const repo = join(root, 'nas');
  const r = await ramboot(['init', repo, '--distro', distro], env);
  if (r.exitCode !== 0) throw new Error(`ramboot init failed: ${r.stderr}`);
  return { repo, home, env };
}

export interface Built {
  buildId: string;
  imageDir: string;
  segments: { name: string; file: string; sha256: string; bytes: number }[];
  stageReused: boolean;
  baseReused: boolean;
}

export async function buildRepo(repo: string, images: string, env: Record<string, string>, extra: string[] = []): Promise<Built> {
  const r = await ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', images, '--json', ...extra], env);
  if (r.exitCode !== 0) throw new Error(`ramboot build failed (${r.exitCode}): ${r.stderr.slice(-3000)}`);
  return JSON.parse(r.stdout) as Built;
}

/**
 * A loopback port free now, below Linux's ephemeral range (32768-60999): a port the
 * kernel hands out for listen(0) may become an outgoing connection's source port before
 * qemu binds it, and qemu then stops at once (a CI run lost a virtual NAS that way).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_768);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
    if (attempt > 100) throw new Error('no free loopback port between 20000 and 32767');
  }
}

/**
 * A commit's files that add a service which dies three seconds after each start (under
 * supervise-daemon it is restarted twice, then given up, and `rc-service flaky status`
 * says crashed): the Debian example's built-in services check fails its trial.
 */
export function crashingService(setup: string): Record<string, [string, number]> {
  return {
    'root/etc/init.d/flaky': [
      '#!/sbin/openrc-run\ndescription="a service that dies after it started"\nsupervisor=supervise-daemon\ncommand=/bin/sleep\ncommand_args=3\nrespawn_max=2\nrespawn_delay=1\npidfile=/run/flaky.pid\n',
      0o755,
    ],
    'setup.sh': [`${setup}\nrc-update add flaky default\n`, 0o755],
  };
}
