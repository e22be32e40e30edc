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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}
