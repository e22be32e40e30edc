import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, createSign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ramboot.js';

// A real OCI registry: Debian's docker-registry (CNCF distribution) on loopback, its
// storage in a temporary directory the tests may read and alter. With a login it asks
// for one as registries do: `basic` (htpasswd, as a self-hosted registry) or `token`
// (a Bearer token from a token service, as GHCR and Harbor; the token service is a
// stand-in made here, signing the JWT the real registry checks against its certificate).

export interface TestRegistry {
  /** host:port, for references like `127.0.0.1:PORT/nas/frood:latest`. */
  host: string;
  /** The filesystem storage: blobs under docker/registry/v2/blobs/sha256/XX/DIGEST/data. */
  storage: string;
  blobPath(digest: string): string;
  stop(): Promise<void>;
}

export interface RegistryAuth {
  kind: 'basic' | 'token';
  username: string;
  password: string;
}

export async function startRegistry(auth?: RegistryAuth): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'ramboot-registry-'));
  const storage = join(dir, 'storage');
  const port = await freePort();
  const config = join(dir, 'config.yml');
  let tokens: Server | undefined;
  const authConfig: string[] = [];
  if (auth?.kind === 'basic') {
    const hash = execFileSync('python3', ['-W', 'ignore', '-c', 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))', auth.password], { encoding: 'utf8' }).trim();
    writeFileSync(join(dir, 'htpasswd'), `${auth.username}:${hash}\n`);
    authConfig.push('auth:', '  htpasswd:', '    realm: test', `    path: ${join(dir, 'htpasswd')}`);
  } else if (auth?.kind === 'token') {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'token.key'), '-out', join(dir, 'token.crt'), '-days', '2', '-subj', '/CN=ramboot-test-token'], { stdio: 'ignore' });
    const tokenPort = await freePort();
    tokens = await tokenService(tokenPort, auth, readFileSync(join(dir, 'token.key')), new X509Certificate(readFileSync(join(dir, 'token.crt'))).raw.toString('base64'));
    authConfig.push('auth:', '  token:', `    realm: http://127.0.0.1:${tokenPort}/token`, '    service: test-registry', '    issuer: test-issuer', `    rootcertbundle: ${join(dir, 'token.crt')}`);
  }
  writeFileSync(config, ['version: 0.1', 'log:', '  level: error', 'storage:', '  filesystem:', `    rootdirectory: ${storage}`, 'http:', `  addr: 127.0.0.1:${port}`, ...authConfig, ''].join('\n'));
  const proc: ChildProcess = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += String(d)));
  const host = `127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(`http://${host}/v2/`).then((r) => r.ok || r.status === 401, () => false);
    if (ok) break;
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill();
      tokens?.close();
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`docker-registry did not start on ${host}: ${stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    host,
    storage,
    blobPath: (digest) => {
      const hex = digest.replace(/^sha256:/, '');
      return join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    },
    async stop() {
      tokens?.close();
      proc.kill();
      await new Promise((r) => (proc.exitCode !== null ? r(undefined) : proc.once('exit', r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The token service of a registry with `token` auth: a JWT for the scope asked, to the right login only. */
function tokenService(port: number, auth: RegistryAuth, key: Buffer, certificate: string): Promise<Server> {
  const expected = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const server = createServer((req, res) => {
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    const scope = /^repository:([^:]+):(.+)$/.exec(url.searchParams.get('scope') ?? '');
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: 'test-issuer',
      sub: auth.username,
      aud: url.searchParams.get('service'),
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: String(Math.random()),
      access: scope ? [{ type: 'repository', name: scope[1], actions: scope[2]!.split(',') }] : [],
    };
    const data = `${b64({ typ: 'JWT', alg: 'RS256', x5c: [certificate] })}.${b64(claims)}`;
    const token = `${data}.${createSign('RSA-SHA256').update(data).sign(key).toString('base64url')}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}
