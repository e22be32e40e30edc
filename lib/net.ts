import { TransientError, UsageError, type RambootError } from './errors.js';

// Network faults in words: what went wrong on the way to a URL, without a stack trace.
// Node's fetch (undici), isomorphic-git and ssh2 report the cause as an error code deep
// in `cause` chains; this finds it and says it the way a person would. Tools that fetch
// for us (apk, apt) say it in their own words; their parsers make the same NetFault.

const CAUSES: Record<string, string> = {
  ENOTFOUND: 'the name does not resolve (DNS)',
  EAI_AGAIN: 'the name does not resolve right now (DNS)',
  ECONNREFUSED: 'the connection was refused (nothing listens there)',
  ECONNRESET: 'the connection was reset',
  EHOSTUNREACH: 'no route to the host',
  ENETUNREACH: 'no route to the network',
  ETIMEDOUT: 'the connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'the connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'the server did not answer in time',
  UND_ERR_BODY_TIMEOUT: 'the server stopped sending in the middle',
  UND_ERR_SOCKET: 'the connection broke',
  EPIPE: 'the connection broke',
};

const TLS_CODE = /^(CERT_|ERR_TLS|ERR_SSL|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_)/;

function codes(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err as { code?: unknown; cause?: unknown; name?: unknown } | undefined, depth = 0; e && depth < 6; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string') out.push(e.code);
    if (e.name === 'TimeoutError' || e.name === 'AbortError') out.push('ETIMEDOUT');
  }
  return out;
}

/** isomorphic-git's HttpError carries the answer in `data`. */
function httpStatus(err: unknown): { status: number; text?: string } | undefined {
  const e = err as { data?: { statusCode?: number; statusMessage?: string }; statusCode?: number } | undefined;
  const status = e?.data?.statusCode ?? e?.statusCode;
  return status === undefined ? undefined : { status, text: e?.data?.statusMessage };
}

/** "the server answered HTTP 404 (Not Found)". */
export function describeStatus(status: number, text?: string): string {
  return `the server answered HTTP ${status}${text ? ` (${text})` : ''}`;
}

/** "the connection was refused (nothing listens there)", "TLS failed (CERT_HAS_EXPIRED)", "the server answered HTTP 404 (Not Found)"… */
export function describeFetchError(err: unknown): string {
  const all = codes(err);
  for (const c of all) {
    if (CAUSES[c]) return CAUSES[c]!;
    if (TLS_CODE.test(c)) return `TLS failed (${c})`;
  }
  const http = httpStatus(err);
  if (http) return describeStatus(http.status, http.text);
  // undici puts the reason in the cause: "fetch failed" alone says nothing.
  const inner = (err as { cause?: unknown })?.cause;
  const message = inner instanceof Error ? inner.message : err instanceof Error ? err.message : String(err);
  return all[0] ? `${message} (${all[0]})` : message;
}

/** Whether an HTTP status is the server's trouble for now rather than a wrong address. */
export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** Whether the error is the network's (worth retrying), not a wrong URL, a refusal or a bug. */
export function isNetworkFault(err: unknown): boolean {
  const http = httpStatus(err);
  if (http) return isTransientStatus(http.status);
  return codes(err).some((c) => c in CAUSES || TLS_CODE.test(c));
}

/** What went wrong fetching one URL. */
export interface NetFault {
  url: string;
  /** In words: "the name does not resolve (DNS)", "the server answered HTTP 404 (Not Found)". */
  cause: string;
  /** The network's or the server's trouble for now (retry later), not a wrong address. */
  transient: boolean;
}

export function faultOfError(url: string, err: unknown): NetFault {
  return { url, cause: describeFetchError(err), transient: isNetworkFault(err) };
}

export function faultOfStatus(url: string, status: number, text?: string): NetFault {
  return { url, cause: describeStatus(status, text), transient: isTransientStatus(status) };
}

/**
 * The error for a fault that stopped work before anything was made: a TransientError
 * (exit 75, try again later) when the network is to blame, a UsageError naming the URL
 * when the address is wrong. Reads "failed to <action> <url>: <cause>; <fix>".
 */
export function netError(action: string, fault: NetFault, fix: string, step: string): RambootError {
  const ctx = { step, input: fault.url };
  if (fault.transient) {
    return new TransientError(`failed to ${action} ${fault.url}: ${fault.cause}; nothing was built: try again when it is reachable, or ${fix}`, ctx);
  }
  return new UsageError(`failed to ${action} ${fault.url}: ${fault.cause}; ${fix}`, ctx);
}

/** A URL without its user and password: a remote's URL may carry a token (which may hold an "@": the host follows the last one). */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1');
}
