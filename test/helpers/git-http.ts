import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';

// A real git HTTP server: git's own `git http-backend` (CGI) behind a small Node HTTP
// server, serving every repository under `root` for clone, fetch and push (smart HTTP).

export interface GitHttp {
  port: number;
  url(repo: string): string;
  /** Requests served so far (method and path): what "cheap when nothing changed" counts. */
  requests: string[];
  /** Stops answering (connections are refused) until started again: a remote that is down. */
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

/** With `auth`, every request must carry it (HTTP Basic), as a forge's private repository does. */
export async function startGitHttp(root: string, auth?: { user: string; password: string }): Promise<GitHttp> {
  const expected = auth && `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString('base64')}`;
  const requests: string[] = [];
  let server: Server;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((req, res) => {
        const url = new URL(req.url ?? '/', 'http://localhost');
        requests.push(`${req.method} ${url.pathname}${url.search}`);
        if (expected && req.headers.authorization !== expected) {
          res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="git"' }).end();
          return;
        }
        const cgi = spawn('git', ['http-backend'], {
          env: {
            ...process.env,
            GIT_PROJECT_ROOT: root,
            GIT_HTTP_EXPORT_ALL: '1',
            REMOTE_USER: 'test',
            REMOTE_ADDR: '127.0.0.1',
            REQUEST_METHOD: req.method ?? 'GET',
            PATH_INFO: decodeURIComponent(url.pathname),
            QUERY_STRING: url.search.slice(1),
            CONTENT_TYPE: req.headers['content-type'] ?? '',
            GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
            HTTP_CONTENT_ENCODING: String(req.headers['content-encoding'] ?? ''),
          },
        });
        req.pipe(cgi.stdin);
        let head = Buffer.alloc(0);
        let sentHead = false;
        cgi.stdout.on('data', (chunk: Buffer) => {
          if (sentHead) return void res.write(chunk);
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          let status = 200;
          for (const line of head.subarray(0, end).toString().split('\r\n')) {
            const [k, ...v] = line.split(':');
            const value = v.join(':').trim();
            if (k!.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
            else res.setHeader(k!, value);
          }
          res.writeHead(status);
          res.write(head.subarray(end + 4));
          sentHead = true;
        });
        cgi.on('close', () => res.end());
      });
      server.listen(port, '127.0.0.1', () => {
        port = (server.address() as { port: number }).port;
        resolve();
      });
    });
  await listen();
  const close = () => new Promise<void>((resolve) => server.close(() => resolve()).closeAllConnections());
  return {
    get port() {
      return port;
    },
    url: (repo) => `http://127.0.0.1:${port}/${repo}`,
    requests,
    down: close,
    up: listen,
    stop: close,
  };
}
