import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TransientError, describe } from '../lib/errors.js';
import type { MachineState } from './state.js';

// How the other verbs (reconcile, release, status, the push hook) talk to a running
// `ramboot up`: the address it wrote into the state directory, and its token.

export interface Api {
  url: string;
  token: string;
}

/** The running controller of this machine, or undefined when none runs. */
export function findController(state: MachineState): Api | undefined {
  const file = join(state.dir, 'api.json');
  if (!existsSync(file)) return undefined;
  const { url, pid } = JSON.parse(readFileSync(file, 'utf8')) as { url: string; pid: number };
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  const tokenFile = join(state.dir, 'api-token');
  return { url, token: existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : '' };
}

export async function callController<T>(api: Api, method: 'GET' | 'POST', path: string): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${api.url}${path}`, { method, headers: { authorization: `Bearer ${api.token}` }, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new TransientError(`failed to reach the controller at ${api.url}: ${describe((err as { cause?: unknown }).cause ?? err)}`, { step: 'call controller', input: api.url });
  }
  const body = await res.text();
  if (!res.ok) throw new TransientError(`the controller at ${api.url} answered ${method} ${path} with HTTP ${res.status}: ${body.slice(0, 200)}`, { step: 'call controller', input: path });
  return JSON.parse(body) as T;
}
