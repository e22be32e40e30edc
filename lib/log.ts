import pino, { type Logger } from 'pino';

// Structured logs go to stderr so stdout stays free for data (--json).
// On a TTY, long work shows a single progress line instead of a log stream.

const root: Logger = pino(
  { level: process.env.RAMBOOT_LOG_LEVEL ?? 'info', base: undefined },
  pino.destination(2),
);

export function logger(component: string): Logger {
  return root.child({ component });
}

export interface Progress {
  /** A new stage of long work began. */
  stage(message: string, fields?: Record<string, unknown>): void;
  /** A fraction of the current stage is done. */
  update(done: number, total?: number, unit?: string): void;
  done(message?: string): void;
}

export function progress(component: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  const log = logger(component);
  if (!stream.isTTY) {
    return {
      stage: (message, fields) => log.info(fields ?? {}, message),
      update: () => {},
      done: (message) => message && log.info(message),
    };
  }
  let current = '';
  const started = Date.now();
  const draw = (text: string) => stream.write(`\r\x1b[2K${text}`);
  return {
    stage(message) {
      current = message;
      draw(`${message}…`);
    },
    update(done, total, unit = '') {
      const pct = total ? ` ${Math.floor((100 * done) / total)}%` : '';
      draw(`${current}… ${human(done, unit)}${total ? ` / ${human(total, unit)}` : ''}${pct}`);
    },
    done(message) {
      draw(`${message ?? current} (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);
    },
  };
}

function human(n: number, unit: string): string {
  if (unit !== 'B') return `${n}${unit}`;
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 ** 2).toFixed(1)} MiB`;
}
