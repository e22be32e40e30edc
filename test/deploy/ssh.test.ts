import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { connect as tcpConnect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, fingerprint, HostKeyMismatchError, parsePublicKey, SshError, shq } from '../../deploy/ssh.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

// Against a local OpenSSH server standing in for the NAS (test/helpers/sshd.ts).

let sshd: TestSshd;
let work: string;

beforeAll(async () => {
  sshd = await startSshd();
  work = await mkdtemp(join(tmpdir(), 'ramboot-ssh-'));
});
afterAll(async () => {
  await sshd.stop();
  await rm(work, { recursive: true, force: true });
});

describe('host key pinning', () => {
  it('computes the fingerprint ssh-keygen -lf prints', async () => {
    const { stdout } = await execa('ssh-keygen', ['-lf', join(sshd.dir, 'host_ed25519.pub')]);
    expect(stdout.split(' ')[1]).toBe(parsePublicKey(sshd.hostKey).fingerprint);
    expect(fingerprint(parsePublicKey(sshd.hostKey).wire)).toBe(stdout.split(' ')[1]);
  });

  it('refuses a machine presenting another key before authenticating or running anything', async () => {
    const marker = join(work, 'must-not-exist');
    const logBefore = sshd.log().length;
    const err = await connect(sshd.target({ hostKey: sshd.otherHostKey })).then(
      async (s) => {
        await s.exec(`touch ${shq(marker)}`);
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HostKeyMismatchError);
    const mismatch = err as HostKeyMismatchError;
    expect(mismatch.host).toBe('nas');
    expect(mismatch.expected).toEqual([parsePublicKey(sshd.otherHostKey).fingerprint]);
    expect(mismatch.presented).toBe(parsePublicKey(sshd.hostKey).fingerprint);
    expect(mismatch.message).toContain(mismatch.presented);
    expect(mismatch.message).toContain(mismatch.expected[0]);
    await expect(stat(marker)).rejects.toThrow();
    // The key exchange failed, so the client never got as far as offering its key: the
    // part of the log this attempt wrote has no login (other tests' logins came before).
    expect(sshd.log().slice(logBefore)).not.toMatch(/Accepted publickey/);
  });

  it('accepts a previous host key while the machine still runs the build that has it', async () => {
    const s = await connect(sshd.target({ hostKey: sshd.otherHostKey, previousHostKeys: [sshd.hostKey] }));
    expect((await s.exec('echo ok')).stdout).toBe('ok\n');
    s.close();
  });

  it('rejects a line that is not a public key', () => {
    expect(() => parsePublicKey('ssh-ed25519 bm90IGEga2V5')).toThrow(/not an OpenSSH public key line/);
  });
});

describe('connection errors', () => {
  it('names an unknown host', async () => {
    const err = await connect(sshd.target({ address: 'no-such-nas.invalid' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SshError);
    expect((err as SshError).reason).toBe('unknown-host');
    expect((err as SshError).message).toMatch(/failed to connect to nas .*unknown host no-such-nas\.invalid/);
  });

  it('reports a closed port as unreachable', async () => {
    // A port this test just had and closed: nothing listens there.
    const closed = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const port = (srv.address() as { port: number }).port;
        srv.close(() => resolve(port));
      });
    });
    const err = await connect(sshd.target({ port: closed })).catch((e: unknown) => e);
    expect((err as SshError).reason).toBe('unreachable');
  });

  /** A TCP server on 127.0.0.1 for one test; `onSocket` decides what it does with each connection. */
  async function tcpServer(onSocket: Parameters<typeof createServer>[1]): Promise<{ port: number; server: Server }> {
    const server = createServer(onSocket!);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as { port: number }).port, server };
  }

  it('gives up at the banner on a port that accepts and says nothing (a port forward to a booting machine)', async () => {
    const held: Socket[] = [];
    const silent = await tcpServer((s) => held.push(s));
    try {
      const err = await connect(sshd.target({ port: silent.port }), 60_000, { bannerTimeoutMs: 1_000 }).catch((e: unknown) => e);
      expect((err as SshError).reason).toBe('timeout');
      expect((err as SshError).message).toMatch(/failed to connect to nas .*127\.0\.0\.1:\d+\): the port is open but no SSH server answered within 1 s/);
    } finally {
      for (const s of held) s.destroy();
      silent.server.close();
    }
  });

  it('reports a port that accepts and hangs up at once', async () => {
    const rude = await tcpServer((s) => s.end());
    try {
      const err = await connect(sshd.target({ port: rude.port }), 60_000, { bannerTimeoutMs: 1_000 }).catch((e: unknown) => e);
      expect((err as SshError).message).toMatch(/the connection closed before the SSH handshake/);
    } finally {
      rude.server.close();
    }
  });

  it('waits for the banner and logs in on one TCP connection (sshd never sees a client leave without logging in)', async () => {
    let connections = 0;
    const proxy = await tcpServer((s) => {
      connections++;
      const up = tcpConnect(sshd.target().port, '127.0.0.1');
      s.pipe(up).pipe(s);
      s.on('error', () => up.destroy());
      up.on('error', () => s.destroy());
    });
    try {
      const session = await connect(sshd.target({ port: proxy.port }), 15_000, { bannerTimeoutMs: 3_000 });
      expect((await session.exec('echo logged-in')).stdout.trim()).toBe('logged-in');
      session.close();
      expect(connections).toBe(1);
    } finally {
      proxy.server.close();
    }
  });

  it('reports a refused client key', async () => {
    const other = join(work, 'stranger');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const err = await connect(sshd.target({ identityFile: other })).catch((e: unknown) => e);
    expect((err as SshError).reason).toBe('auth');
  });
});

describe('exec', () => {
  it('returns exit codes, stdout and stderr', async () => {
    const s = await connect(sshd.target());
    expect(await s.exec('echo out; echo err >&2; exit 3')).toMatchObject({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect((await s.exec('true')).code).toBe(0);
    expect((await s.exec('cat', { stdin: 'piped' })).stdout).toBe('piped');
    await expect(s.check('list things', 'ls /nonexistent-dir')).rejects.toThrow(/failed to list things on nas: `ls \/nonexistent-dir` exited with 2\n.*No such file/);
    s.close();
  });

  it('times out a request that does not finish', async () => {
    const s = await connect(sshd.target());
    const err = await s.exec('sleep 30', { timeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as SshError).reason).toBe('timeout');
    expect((await s.exec('echo still usable')).stdout).toBe('still usable\n');
    s.close();
  });

  it('tolerates the connection dropping when asked to (as during a reboot)', async () => {
    const s = await connect(sshd.target());
    const pending = s.exec('sleep 30', { tolerateDisconnect: true });
    setTimeout(() => s.destroy(), 200);
    expect(await pending).toMatchObject({ code: null, disconnected: true });
    const s2 = await connect(sshd.target());
    const failing = s2.exec('sleep 30');
    setTimeout(() => s2.destroy(), 200);
    expect(((await failing.catch((e: unknown) => e)) as SshError).reason).toBe('disconnected');
  });
});

describe('upload', () => {
  it('streams a file and verifies it with sha256sum on the target', async () => {
    const local = join(work, 'blob');
    const data = randomBytes(3 * 1024 * 1024 + 17);
    await writeFile(local, data);
    const s = await connect(sshd.target());
    const seen: number[] = [];
    const remote = join(work, 'remote blob');
    expect(await s.upload(local, remote, (sent) => seen.push(sent))).toBe(data.length);
    expect(seen.at(-1)).toBe(data.length);
    expect(await s.sha256(remote)).toBe(createHash('sha256').update(data).digest('hex'));
    await s.rename(remote, join(work, 'renamed'));
    expect((await readFile(join(work, 'renamed'))).equals(data)).toBe(true);
    s.close();
  });
});
