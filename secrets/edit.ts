import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { withRamDir } from './ramdir.js';

// Editing a secret: the plaintext goes to a 0600 file in a private RAM directory, the
// user's $EDITOR runs on it, and the directory (with any swap or backup files the
// editor left beside it) is removed whatever happens.

export type EditOutcome =
  | { kind: 'changed'; plaintext: Buffer }
  | { kind: 'unchanged' }
  | { kind: 'failed'; reason: string };

export async function editInRam(
  plaintext: Uint8Array,
  imagePath: string,
  editor: string,
  env: Record<string, string | undefined>,
): Promise<EditOutcome> {
  return withRamDir(env, async (dir) => {
    // The secret's own name lets the editor pick the right syntax.
    const file = join(dir, basename(imagePath));
    await writeFile(file, plaintext, { mode: 0o600, flag: 'wx' });
    const exit = await runEditor(editor, file, env);
    if (exit !== 0) return { kind: 'failed', reason: `the editor (${editor}) exited with ${exit}` };
    const edited = await readFile(file);
    if (edited.equals(Buffer.from(plaintext))) return { kind: 'unchanged' };
    if (edited.length === 0) return { kind: 'failed', reason: 'the edited secret is empty' };
    return { kind: 'changed', plaintext: edited };
  });
}

/**
 * Runs `$EDITOR file` through sh, so EDITOR may carry arguments ("code --wait").
 * While it runs, Ctrl-C belongs to the editor, and a SIGTERM/SIGHUP sent to ramboot is
 * passed on, so ramboot is still there to remove the plaintext afterwards.
 */
function runEditor(editor: string, file: string, env: Record<string, string | undefined>): Promise<number | string> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', `${editor} "$1"`, 'ramboot-edit', file], { stdio: 'inherit', env });
    const ignore = (): void => {};
    const forward = (signal: NodeJS.Signals): void => {
      child.kill(signal);
    };
    process.on('SIGINT', ignore);
    process.on('SIGTERM', forward);
    process.on('SIGHUP', forward);
    const done = (): void => {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', forward);
      process.off('SIGHUP', forward);
    };
    child.on('error', (err) => {
      done();
      reject(err);
    });
    child.on('exit', (code, signal) => {
      done();
      resolve(code ?? signal ?? 'an unknown status');
    });
  });
}
