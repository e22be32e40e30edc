import { createServer } from 'node:net';

/** A loopback TCP port nothing listens on now (the benches forward the virtual NAS's ports to it). */
export const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
