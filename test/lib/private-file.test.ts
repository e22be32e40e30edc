import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../lib/errors.js';
import { appendPrivateFile, makePrivateDir, readPrivateFile, writePrivateFile } from '../../lib/private-file.js';

// Secret files handed to ramboot are refused when others can read them; the files it
// writes are its owner's alone, under the umask people usually run with (022).

let dir: string;
let umask: number;
beforeAll(() => {
  umask = process.umask(0o022);
  dir = mkdtempSync(join(tmpdir(), 'ramboot-private-'));
});
afterAll(() => {
  process.umask(umask);
});
const modeOf = (path: string) => statSync(path).mode & 0o777;

describe('reading a secret file', () => {
  it('reads a file only its owner can read', () => {
    const file = join(dir, 'token');
    writeFileSync(file, 'the token\n', { mode: 0o600 });
    expect(readPrivateFile(file, 'the API token (--token-file)')).toBe('the token\n');
    chmodSync(file, 0o400);
    expect(readPrivateFile(file, 'the API token (--token-file)')).toBe('the token\n');
  });

  it.each(['0644', '0640', '0604', '0660'])('refuses a file of mode %s, naming it and the fix', (octal) => {
    const mode = parseInt(octal, 8);
    const file = join(dir, `secret-${octal}`);
    writeFileSync(file, 'the secret\n');
    chmodSync(file, mode);
    const err = (() => {
      try {
        return readPrivateFile(file, 'the webhook secret (--webhook-secret)');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toBe(
      `failed to read the webhook secret (--webhook-secret) ${file}: it is open to other users (mode ${octal}); make it private with \`chmod 600 ${file}\` (and replace the secret if others could read it)`,
    );
  });

  it('a missing file is a UsageError naming it', () => {
    const read = () => readPrivateFile(join(dir, 'nope'), 'the API token (--token-file)');
    expect(read).toThrow(UsageError);
    expect(read).toThrow(`failed to read the API token (--token-file) ${join(dir, 'nope')}: no such file`);
  });
});

describe('writing state under umask 022', () => {
  it('a whole file is written 0600, replacing the old content and leaving no temporary file', () => {
    const file = join(dir, 'state.json');
    writeFileSync(file, 'old\n', { mode: 0o644 });
    writePrivateFile(file, 'new\n');
    expect(readFileSync(file, 'utf8')).toBe('new\n');
    expect(modeOf(file)).toBe(0o600);
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('an appended file is created 0600', () => {
    const file = join(dir, 'events.log');
    appendPrivateFile(file, 'one\n');
    appendPrivateFile(file, 'two\n');
    expect(readFileSync(file, 'utf8')).toBe('one\ntwo\n');
    expect(modeOf(file)).toBe(0o600);
  });

  it('a directory and its new parents are 0700, and an existing one is made 0700', () => {
    makePrivateDir(join(dir, 'a', 'b'));
    expect([modeOf(join(dir, 'a')), modeOf(join(dir, 'a', 'b'))]).toEqual([0o700, 0o700]);
    mkdirSync(join(dir, 'open'), { mode: 0o755 });
    makePrivateDir(join(dir, 'open'));
    expect(modeOf(join(dir, 'open'))).toBe(0o700);
  });
});
