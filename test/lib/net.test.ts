import { createServer, type Server } from 'node:http';
import git from 'isomorphic-git';
import http from 'isomorphic-git/http/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeFetchError, faultOfError, isNetworkFault, netError, redactUrl } from '../../lib/net.js';
import { freePort } from '../helpers/ramboot.js';

// The words for network faults, from the errors the real clients raise: Node's fetch
// and isomorphic-git (what `ramboot up --url` polls a git remote with).

describe('network faults in words', () => {
  let server: Server;
  let url: string;

  beforeAll(async () => {
    server = createServer((_req, res) => res.writeHead(404, { 'content-type': 'text/plain' }).end('no such repository\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  async function failure(fn: () => Promise<unknown>): Promise<unknown> {
    try {
      await fn();
    } catch (err) {
      return err;
    }
    throw new Error('expected a failure');
  }

  it('a git remote that answers 404 is the address\'s fault, named with the status', async () => {
    const err = await failure(() => git.listServerRefs({ http, url: `${url}/nas.git`, protocolVersion: 2 }));
    expect(describeFetchError(err)).toBe('the server answered HTTP 404 (Not Found)');
    expect(isNetworkFault(err)).toBe(false);
  });

  it('a git remote where nothing listens is the network\'s fault: retry later', async () => {
    const port = await freePort();
    const err = await failure(() => git.listServerRefs({ http, url: `http://127.0.0.1:${port}/nas.git`, protocolVersion: 2 }));
    expect(describeFetchError(err)).toBe('the connection was refused (nothing listens there)');
    expect(isNetworkFault(err)).toBe(true);
  });

  it('fetch of a name that does not resolve says DNS, not "fetch failed", and becomes a TransientError naming the URL', async () => {
    const target = 'http://no-such-host.invalid/x.tar.gz';
    const err = await failure(() => fetch(target));
    const fault = faultOfError(target, err);
    expect(fault.cause).toMatch(/the name does not resolve/);
    const e = netError('download', fault, 'use a local copy', 'test');
    expect(e.kind).toBe('retry');
    expect(e.message).toMatch(/^failed to download http:\/\/no-such-host\.invalid\/x\.tar\.gz: the name does not resolve.*; nothing was built: try again when it is reachable, or use a local copy$/);
  });
});

describe('a URL shown without its credentials', () => {
  it('drops the user and the password, also a password holding "@", and leaves the rest', () => {
    expect(redactUrl('https://nas:tok@en@forge.example/tess/nas.git')).toBe('https://forge.example/tess/nas.git');
    expect(redactUrl('http://token@127.0.0.1:3000/nas.git?x=a@b')).toBe('http://127.0.0.1:3000/nas.git?x=a@b');
    expect(redactUrl('https://forge.example/tess/n@s.git')).toBe('https://forge.example/tess/n@s.git');
  });
});
