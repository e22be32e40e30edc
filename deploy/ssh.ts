import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import { Client, type ClientChannel } from 'ssh2';
import { RambootError, UsageError, describe, lastLines, type ErrorKind } from '../lib/errors.js';

// The SSH transport of a deploy. Every command runs over `exec` (no SFTP: Alpine's
// OpenSSH has no sftp-server unless a package adds it). The machine's host key is
// pinned from the image: there is no trust on first use and no known_hosts file.

/** A machine ramboot deploys to. */
export interface Target {
  /** The host name of ramboot.yaml: used in messages, the journal and the state directory. */
  name: string;
  address: string;
  port: number;
  user: string;
  /** The controller's private key (client authentication). */
  identityFile: string;
  /** The OpenSSH public line the machine must present ("ssh-ed25519 AAAA…"). */
  hostKey: string;
  /**
   * Keys the machine may also present: when a deploy rotates the host key, the
   * machine keeps presenting the running build's key until it boots the candidate.
   */
  previousHostKeys?: string[];
  /** Turns the machine off and on when it neither answers nor reboots itself (smart plug, IPMI, qemu). */
  powerCycle?: string | (() => Promise<void>);
}

export type SshFailure = 'unknown-host' | 'unreachable' | 'auth' | 'timeout' | 'disconnected';

/** The machine could not be reached or a request over SSH did not complete. */
export class SshError extends RambootError {
  readonly reason: SshFailure;
  constructor(message: string, reason: SshFailure, ctx: { step: string; host: string; input?: string }, cause?: unknown) {
    super(message, ctx, { cause });
    this.reason = reason;
  }
}

/** The machine presented a host key other than the pinned one: nothing was sent to it. */
export class HostKeyMismatchError extends RambootError {
  readonly expected: string[];
  readonly presented: string;
  constructor(host: string, expected: string[], presented: string) {
    super(
      `failed to connect to ${host}: host key mismatch: expected ${expected.join(' or ')}, the machine presented ${presented}; ` +
        'refused before anything was sent (is this the right machine, or was its host key secret changed?)',
      { step: 'connect', host },
    );
    this.expected = expected;
    this.presented = presented;
  }
}

/**
 * The machine presented another host key, and its pre-login banner says why: its TPM could
 * not unseal the secrets (image/agent/ramboot-sealed), so it runs a recovery boot with a
 * recovery host key. The banner is read without logging in; whatever it says, nothing is sent.
 */
export class SealedSecretsUnavailableError extends HostKeyMismatchError {
  override readonly kind: ErrorKind = 'person';
  readonly reason: string;
  readonly recoveryHostKey?: string;
  constructor(host: string, expected: string[], presented: string, reason: string, recoveryHostKey: string | undefined) {
    super(host, expected, presented);
    const key = recoveryHostKey ? ` '${recoveryHostKey}'` : ' LINE';
    this.message =
      `sealed secrets unavailable on ${host}: its TPM could not unseal the key of its secrets (another board, a cleared TPM, or the stick moved to another machine: ${reason}). ` +
      `It runs a recovery boot (network, console and sshd only, with a recovery host key ${presented}); the medium is unchanged and nothing was sent. ` +
      `Compare that fingerprint with the one on the machine's console, then re-enroll: \`ramboot secrets enroll --host-key${key}\`, commit, and deploy with \`ramboot deploy --host-key${key}\``;
    this.reason = reason;
    this.recoveryHostKey = recoveryHostKey;
  }
}

/** What ramboot-sealed writes into sshd's banner on a recovery boot. */
const SEALED_BANNER = /^ramboot-sealed: unavailable: (.*)$/m;
const RECOVERY_KEY_BANNER = /^ramboot-sealed: recovery-host-key: (\S+ \S+)/m;

/**
 * Reads a machine's pre-login banner without logging in (the "none" method only, no key
 * offered): after a host-key mismatch, to tell a recovery boot from another machine.
 */
export function readBanner(target: Pick<Target, 'address' | 'port' | 'user'>, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve) => {
    const client = new Client();
    let banner = '';
    const done = () => {
      clearTimeout(timer);
      client.removeAllListeners();
      client.on('error', () => {});
      client.destroy();
      resolve(banner);
    };
    const timer = setTimeout(done, timeoutMs);
    client.on('banner', (text: string) => (banner += text));
    client.on('error', done);
    client.on('close', done);
    client.on('ready', done);
    client.connect({ host: target.address, port: target.port, username: target.user, hostVerifier: () => true, readyTimeout: timeoutMs, tryKeyboard: false });
  });
}

export interface PinnedKey {
  type: string;
  /** The SSH wire encoding of the public key: what the server sends during key exchange. */
  wire: Buffer;
  fingerprint: string;
}

/** Parses an OpenSSH public key line ("<type> <base64> [comment]"). */
export function parsePublicKey(line: string): PinnedKey {
  const [type, b64] = line.trim().split(/\s+/);
  const wire = Buffer.from(b64 ?? '', 'base64');
  // The wire form starts with the key type as an SSH string: a cheap check that the line is a key.
  const len = wire.length >= 4 ? wire.readUInt32BE(0) : -1;
  if (!type || len <= 0 || wire.subarray(4, 4 + len).toString('latin1') !== type) {
    throw new UsageError(`failed to read host key "${line.slice(0, 40)}": not an OpenSSH public key line`, { step: 'read host key', input: line });
  }
  return { type, wire, fingerprint: fingerprint(wire) };
}

/** The SHA256 fingerprint as `ssh-keygen -lf` prints it. */
export function fingerprint(wire: Buffer): string {
  return `SHA256:${createHash('sha256').update(wire).digest('base64').replace(/=+$/, '')}`;
}

/** Quotes a word for the remote POSIX shell. */
export function shq(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export interface ExecResult {
  /** Null when the command was killed by a signal or the connection ended first. */
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
  /** The connection ended before the command reported its exit (expected when it reboots the machine). */
  disconnected?: boolean;
}

export interface ExecOptions {
  timeoutMs?: number;
  stdin?: string | Buffer;
  /** Resolve instead of failing when the connection drops before the exit status arrives. */
  tolerateDisconnect?: boolean;
}

export const CONNECT_TIMEOUT_MS = 15_000;
export const EXEC_TIMEOUT_MS = 60_000;
/** An upload that moves no byte for this long has stalled. */
export const UPLOAD_IDLE_TIMEOUT_MS = 60_000;

/** Host key algorithms that present a key of this type (RSA keys sign with several). */
function hostKeyAlgorithms(types: string[]): string[] {
  return [...new Set(types.flatMap((t) => (t === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [t])))];
}

/**
 * Opens the TCP connection and waits for the server's first bytes (sshd sends its
 * "SSH-2.0-…" line before anything else), then hands the socket to ssh2 with those bytes
 * put back. A port forward (qemu's, a NAT) accepts the connection while the machine
 * behind it still boots and then says nothing: a poll gives up on that after
 * `bannerTimeoutMs` instead of waiting out a whole handshake timeout, on the one
 * connection, so that sshd never sees a client leave without logging in (OpenSSH's
 * PerSourcePenalties would block the controller for that).
 */
function openSocket(target: Target, bannerTimeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = new Socket();
    const fail = (err: Error & { code?: string; level?: string }) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () => {
        const secs = Math.round(bannerTimeoutMs / 1000);
        const why = sock.connecting ? `no TCP connection within ${secs} s` : `the port is open but no SSH server answered within ${secs} s`;
        fail(Object.assign(new Error(why), { level: 'client-banner' }));
      },
      bannerTimeoutMs,
    );
    sock.once('error', fail);
    sock.once('end', () => fail(Object.assign(new Error('the connection closed before the SSH handshake'), { level: 'client-socket' })));
    sock.once('readable', () => {
      const first = sock.read() as Buffer | null;
      if (!first) return;
      clearTimeout(timer);
      sock.removeAllListeners('error').removeAllListeners('end');
      sock.pause();
      sock.unshift(first);
      resolve(sock);
    });
    sock.connect({ host: target.address, port: target.port });
  });
}

/** Opens an SSH session; the machine must present one of the pinned host keys. */
export async function connect(target: Target, timeoutMs = CONNECT_TIMEOUT_MS, opts: { bannerTimeoutMs?: number } = {}): Promise<Session> {
  const pins = [target.hostKey, ...(target.previousHostKeys ?? [])].map(parsePublicKey);
  let privateKey: Buffer;
  try {
    privateKey = await readFile(target.identityFile);
  } catch (err) {
    throw new UsageError(`failed to read SSH identity ${target.identityFile}: ${describe(err)} (set host.identity in ramboot.yaml)`, {
      step: 'connect',
      host: target.name,
      input: target.identityFile,
    });
  }
  const started = Date.now();
  let sock: Socket;
  try {
    sock = await openSocket(target, opts.bannerTimeoutMs ?? timeoutMs);
  } catch (err) {
    throw connectError(target, pins, undefined, err as Error);
  }
  // The banner's wait counts against the whole timeout.
  const left = Math.max(1_000, timeoutMs - (Date.now() - started));
  const client = new Client();
  let presented: Buffer | undefined;
  return new Promise<Session>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error & { code?: string; level?: string }) => {
      client.destroy();
      if (settled) return;
      settled = true;
      clearTimeout(guard);
      const error = connectError(target, pins, presented, err);
      if (error instanceof HostKeyMismatchError) void sealedOrMismatch(target, error).then(reject);
      else reject(error);
    };
    // `on`, not `once`: ssh2 may emit a second error after the first (a handshake timeout,
    // then "Connection lost before handshake" as the socket closes); with no listener left
    // it would be an uncaught exception that kills the controller while it polls a reboot.
    client.on('error', fail);
    // A socket closed before the handshake without an error (qemu's port forward while the
    // guest boots) would leave this promise pending forever, and a CLI exits 0 with nothing
    // left to wait on: closing before 'ready' is a failure like any other.
    const closed = () => fail(Object.assign(new Error('the connection closed before the SSH handshake'), { level: 'client-socket' }));
    client.once('close', closed);
    // ssh2's readyTimeout covers the handshake; this bounds the whole attempt whatever ssh2 does.
    const guard = setTimeout(() => fail(Object.assign(new Error('timed out'), { level: 'client-timeout' })), left + 5_000);
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      clearTimeout(guard);
      client.off('error', fail);
      client.off('close', closed);
      resolve(new Session(client, target));
    });
    client.connect({
      sock,
      username: target.user,
      privateKey,
      readyTimeout: left,
      // Only the pinned key types are negotiated, so the server presents the pinned key and not another one it also has.
      algorithms: { serverHostKey: hostKeyAlgorithms(pins.map((p) => p.type)) as never },
      hostVerifier: (key: Buffer) => {
        presented = key;
        return pins.some((p) => p.wire.equals(key));
      },
      // A machine that reboots under us stops answering without closing the socket.
      keepaliveInterval: 5_000,
      keepaliveCountMax: 3,
    });
  });
}

async function sealedOrMismatch(target: Target, mismatch: HostKeyMismatchError): Promise<HostKeyMismatchError> {
  const banner = await readBanner(target);
  const sealed = SEALED_BANNER.exec(banner);
  if (!sealed) return mismatch;
  // The banner comes from a server nobody vouched for: its reason is shown without control
  // characters, and its key line is repeated in a command only if it is the key presented.
  const reason = sealed[1]!.replace(/[\u0000-\u001f\u007f]/g, ' ').trim().slice(0, 300);
  return new SealedSecretsUnavailableError(target.name, mismatch.expected, mismatch.presented, reason, presentedKeyLine(RECOVERY_KEY_BANNER.exec(banner)?.[1], mismatch.presented));
}

/** The banner's recovery key line, if it is a plain ed25519 key whose fingerprint is the presented one. */
function presentedKeyLine(line: string | undefined, presented: string): string | undefined {
  if (!line || !/^ssh-ed25519 [A-Za-z0-9+/]+={0,2}$/.test(line)) return undefined;
  try {
    return parsePublicKey(line).fingerprint === presented ? line : undefined;
  } catch {
    return undefined;
  }
}

function connectError(target: Target, pins: PinnedKey[], presented: Buffer | undefined, err: Error & { code?: string; level?: string }): Error {
  if (presented && !pins.some((p) => p.wire.equals(presented))) {
    return new HostKeyMismatchError(target.name, pins.map((p) => p.fingerprint), fingerprint(presented));
  }
  const where = `${target.name} (${target.user}@${target.address}:${target.port})`;
  const ctx = { step: 'connect', host: target.name };
  if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
    return new SshError(`failed to connect to ${where}: unknown host ${target.address} (set host.address in ramboot.yaml)`, 'unknown-host', ctx, err);
  }
  if (err.level === 'client-authentication') {
    return new SshError(`failed to connect to ${where}: the machine refused the key ${target.identityFile}`, 'auth', ctx, err);
  }
  if (err.level === 'client-banner') {
    return new SshError(`failed to connect to ${where}: ${err.message}`, 'timeout', ctx, err);
  }
  if (err.level === 'client-timeout') {
    return new SshError(`failed to connect to ${where}: no SSH handshake within the timeout`, 'timeout', ctx, err);
  }
  return new SshError(`failed to connect to ${where}: ${err.message}`, 'unreachable', ctx, err);
}

/** One authenticated SSH connection to a machine. */
export class Session {
  private closed = false;

  constructor(
    private readonly client: Client,
    readonly target: Target,
  ) {
    // After the handshake a lost connection surfaces on the pending channels; this keeps
    // the client's own 'error' event from becoming an unhandled exception.
    client.on('error', () => {
      this.closed = true;
    });
    client.on('close', () => {
      this.closed = true;
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs a command through the login shell; the exit code comes from the channel's exit event. */
  exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? EXEC_TIMEOUT_MS;
    return this.channel(command, (ch, finish) => {
      const timer = setTimeout(() => {
        finish(new SshError(`failed to run \`${command}\` on ${this.target.name}: no exit within ${timeoutMs / 1000} s`, 'timeout', this.ctx(command)));
        ch.close();
      }, timeoutMs);
      ch.on('close', () => clearTimeout(timer));
      ch.end(opts.stdin);
    }, opts.tolerateDisconnect ?? false);
  }

  /** Like exec, but a non-zero exit throws a RambootError carrying the command's output (its tail also in the message). */
  async check(step: string, command: string, opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(command, opts);
    if (r.code !== 0) {
      const output = `${r.stdout}${r.stderr}`.trim();
      throw new RambootError(
        `failed to ${step} on ${this.target.name}: \`${command}\` exited with ${r.code ?? r.signal ?? 'no status'}${output ? `\n${lastLines(output, 20)}` : ''}`,
        { step, host: this.target.name, input: command, output },
      );
    }
    return r.stdout;
  }

  /**
   * Streams a local file into `remotePath` with `cat`; works wherever a shell does. From
   * a byte offset, the rest of the file is appended (resuming a cut upload). Resolves
   * with the bytes sent once the remote `cat` exited 0, i.e. every byte reached the file.
   */
  async upload(localFile: string, remotePath: string, onProgress?: (sent: number, total: number) => void, offset = 0): Promise<number> {
    const total = (await stat(localFile)).size - offset;
    // From the start: a new inode, so a writer left by a cut connection cannot write into it.
    const command = offset > 0 ? `cat >> ${shq(remotePath)}` : `rm -f ${shq(remotePath)} && cat > ${shq(remotePath)}`;
    const r = await this.channel(command, (ch, finish) => {
      let sent = 0;
      const source = createReadStream(localFile, { start: offset });
      let idle: NodeJS.Timeout;
      const arm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => {
          finish(new SshError(`failed to upload ${localFile} to ${this.target.name}: stalled for ${UPLOAD_IDLE_TIMEOUT_MS / 1000} s`, 'timeout', this.ctx(command)));
          source.destroy();
          ch.close();
        }, UPLOAD_IDLE_TIMEOUT_MS);
      };
      arm();
      source.on('data', (chunk) => {
        sent += chunk.length;
        arm();
        onProgress?.(sent, total);
      });
      source.on('error', (err) => {
        finish(new RambootError(`failed to read ${localFile}: ${err.message}`, { step: 'upload', host: this.target.name, input: localFile }, { cause: err }));
        ch.close();
      });
      ch.on('close', () => {
        clearTimeout(idle);
        source.destroy();
      });
      source.pipe(ch);
    }, false);
    if (r.code !== 0) {
      throw new RambootError(`failed to upload ${localFile} to ${this.target.name}:${remotePath}: \`${command}\` exited with ${r.code ?? r.signal}\n${r.stderr.trim()}`, {
        step: 'upload',
        host: this.target.name,
        input: localFile,
        output: r.stderr,
      });
    }
    return total;
  }

  /** The sha256 of a file on the machine. */
  async sha256(remotePath: string): Promise<string> {
    const out = await this.check('hash file', `sha256sum ${shq(remotePath)}`, { timeoutMs: 5 * EXEC_TIMEOUT_MS });
    const m = /^([0-9a-f]{64})\b/.exec(out);
    if (!m) throw new RambootError(`failed to hash ${remotePath} on ${this.target.name}: unexpected sha256sum output "${out.trim()}"`, this.ctx('sha256sum'));
    return m[1]!;
  }

  /** Renames over an existing file; rename(2) is the atomic step of every write to the medium. */
  async rename(from: string, to: string): Promise<void> {
    await this.check('rename file', `mv -f ${shq(from)} ${shq(to)}`);
  }

  close(): void {
    this.closed = true;
    this.client.end();
  }

  /** Drops the connection at once, as a network failure would (the remote side sees a reset). */
  destroy(): void {
    this.closed = true;
    this.client.destroy();
  }

  private ctx(input: string) {
    return { step: 'exec', host: this.target.name, input };
  }

  /** Opens an exec channel, collects its output and exit status, and settles once. */
  private channel(
    command: string,
    drive: (ch: ClientChannel, finish: (err: Error) => void) => void,
    tolerateDisconnect: boolean,
  ): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new SshError(`failed to run \`${command}\` on ${this.target.name}: the connection is closed`, 'disconnected', this.ctx(command)));
        return;
      }
      let settled = false;
      const finish = (err: Error | undefined, result?: ExecResult) => {
        if (settled) return;
        settled = true;
        this.client.off('close', lost);
        if (err) reject(err);
        else resolve(result!);
      };
      // The connection can die before the channel opens (a machine rebooting under us); ssh2
      // may then never call back, and with nothing else pending a CLI would exit 0 mid-deploy.
      const lost = () =>
        // After the channel's own close, which reports an exit status that did arrive.
        setImmediate(() =>
          tolerateDisconnect
          ? finish(undefined, { code: null, stdout: '', stderr: '', disconnected: true })
            : finish(new SshError(`failed to run \`${command}\` on ${this.target.name}: the connection was lost before it finished`, 'disconnected', this.ctx(command))),
        );
      this.client.once('close', lost);
      this.client.exec(command, (err, ch) => {
        if (err) {
          finish(new SshError(`failed to run \`${command}\` on ${this.target.name}: ${err.message}`, 'disconnected', this.ctx(command), err));
          return;
        }
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let code: number | null = null;
        let signal: string | undefined;
        let exited = false;
        ch.on('exit', (c: number | null, s?: string) => {
          exited = true;
          code = c;
          signal = s ?? undefined;
        });
        ch.on('data', (d: Buffer) => stdout.push(d));
        ch.stderr.on('data', (d: Buffer) => stderr.push(d));
        // Writes into a channel whose connection just died fail here; the close below reports it.
        ch.on('error', () => {});
        ch.on('close', () => {
          const result: ExecResult = { code, signal, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() };
          if (exited) finish(undefined, result);
          else if (tolerateDisconnect) finish(undefined, { ...result, disconnected: true });
          else finish(new SshError(`failed to run \`${command}\` on ${this.target.name}: the connection was lost before it finished`, 'disconnected', this.ctx(command)));
        });
        drive(ch, (e) => finish(e));
      });
    });
  }
}
