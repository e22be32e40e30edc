import pino from 'pino';
import type { DeployEvent } from '../deploy/deploy.js';
import { VERDICT_TEXT } from '../deploy/verdict.js';
import type { BuildEvent } from '../builder/work.js';
import type { Emit, StageEvent, WarnEvent } from '../lib/events.js';
import type { VmEvent } from '../vm/qemu.js';
import type { ControllerEvent } from './events.js';

// The one place where events become text: a live progress line on a terminal, plain
// lines otherwise (logs, `git push` output), JSON lines with --json (pino). Every verb
// and the controller hand their events to a renderer; nothing else writes progress.

export type RambootEvent = BuildEvent | DeployEvent | VmEvent | StageEvent | WarnEvent | ControllerEvent;

export type RenderMode = 'tty' | 'plain' | 'json';

export interface Renderer {
  emit: Emit<RambootEvent>;
  /** Ends a live line, if one is showing. */
  end(): void;
}

export function modeFor(stream: { isTTY?: boolean }, json: boolean): RenderMode {
  return json ? 'json' : stream.isTTY ? 'tty' : 'plain';
}

/**
 * How often a progress update (bytes sent, waiting) is printed as its own line when not
 * on a terminal. Command output is not progress: every line of it is printed, so that
 * the log of a failed build in CI is the whole log.
 */
const PLAIN_UPDATE_MS = 15_000;

export function renderer(mode: RenderMode, stream: NodeJS.WritableStream & { columns?: number }): Renderer {
  if (mode === 'json') {
    const log = pino({ base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, stream);
    return {
      emit: (e) => {
        const text = describeEvent(e) ?? progressText(e);
        if (e.kind === 'warn') log.warn(e, text);
        else log.info(e, text);
      },
      end: () => {},
    };
  }
  let live = false;
  let lastUpdate = 0;
  const line = (text: string) => {
    stream.write(`${live ? '\r\x1b[2K' : ''}${text}\n`);
    live = false;
  };
  return {
    emit: (e) => {
      const text = describeEvent(e);
      if (text !== undefined) return line(text);
      const update = progressText(e);
      if (update === undefined) return;
      if (mode === 'tty') {
        // One terminal row, or the next update could not erase it.
        stream.write(`\r\x1b[2K${update.slice(0, (stream.columns ?? 80) - 1)}`);
        live = true;
      } else if (e.kind === 'output') {
        line(update);
      } else if (Date.now() - lastUpdate >= PLAIN_UPDATE_MS) {
        line(update);
        lastUpdate = Date.now();
      }
    },
    end: () => {
      if (live) line('');
    },
  };
}

/** The line an event stands for, or undefined for progress updates and raw command output. */
export function describeEvent(e: RambootEvent): string | undefined {
  switch (e.kind) {
    case 'stage':
      return `${e.source}: ${e.step ? `[${e.step.n}/${e.step.of}] ` : ''}${e.message}`;
    case 'warn':
      return `${e.source}: warning: ${e.message}`;
    case 'output':
      return undefined;
    case 'built':
      return `build: built ${e.buildId} in ${(e.ms / 1000).toFixed(1)} s${e.stageReused ? ' (package stage reused' : ' (packages installed'}${e.baseReused ? ', base reused)' : ')'}`;
    case 'step':
      return `deploy: ${e.message}`;
    case 'running':
      return `deploy: ${e.host} runs build ${e.running.build ?? e.running.cmdlineBuild ?? 'unknown'} from slot ${e.running.slot ?? '(not booted by ramboot)'}`;
    case 'upload':
      return e.sent === e.total ? `deploy: sent ${size(e.total)}` : undefined;
    case 'wait':
      return undefined;
    case 'check': {
      const c = e.event;
      return `deploy: check ${c.check}: ${c.ok ? 'ok' : 'failed'} (attempt ${c.attempt}/${c.of})${c.ok ? '' : `: ${c.output.split('\n')[0]}`}`;
    }
    case 'verdict':
      return `deploy: ${VERDICT_TEXT[e.outcome.verdict]}: ${e.outcome.message}`;
    case 'noticed':
      return `controller: ${e.commit.slice(0, 12)} (${e.trigger.kind}${e.trigger.detail ? `: ${e.trigger.detail}` : ''}): ${NOTICED[e.queued]}`;
    case 'superseded':
      return `controller: ${e.commit.slice(0, 12)} superseded by ${e.by.slice(0, 12)}`;
    case 'phase':
      return undefined;
    case 'reconciled':
      return `controller: ${e.commit.slice(0, 12)}: ${e.outcome}: ${e.message}`;
    case 'rolled-out':
      return `controller: ${e.message}`;
    case 'heartbeat':
      return undefined;
  }
}

const NOTICED = {
  started: 'reconciling',
  pending: 'queued after the running reconcile',
  duplicate: 'already queued',
  quarantined: 'quarantined, not deployed (ramboot release lifts it)',
  paused: 'automatic deploys are paused',
} as const;

function progressText(e: RambootEvent): string | undefined {
  switch (e.kind) {
    case 'upload':
      return `  sent ${size(e.sent)} of ${size(e.total)} (${e.file.split('/').pop()})`;
    case 'wait':
      return `  waiting for ${e.what}: ${Math.round(e.elapsedMs / 1000)} s${e.observation.reachable ? '' : ` (${e.observation.error.split(':').pop()?.trim()})`}`;
    case 'output':
      return `  ${e.line}`;
    default:
      return undefined;
  }
}

export function size(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 ** 2).toFixed(1)} MiB`;
}
