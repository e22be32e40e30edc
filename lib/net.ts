// Network faults in words: what went wrong on the way to a URL, without a stack trace.
// Node's fetch (undici), isomorphic-git and ssh2 report the cause as an error code deep
// in `cause` chains; this finds it and says it the way a person would.

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
  UND_ERR_SOCKET: 'the connection broke',
  EPIPE: 'the connection broke',
};

function codes(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err as { code?: unknown; cause?: unknown; name?: unknown } | undefined, depth = 0; e && depth < 6; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string') out.push(e.code);
    if (e.name === 'TimeoutError' || e.name === 'AbortError') out.push('ETIMEDOUT');
  }
  return out;
}

/** "the connection was refused (nothing listens there)", "TLS failed: CERT_HAS_EXPIRED", "HTTP 404"… */
export function describeFetchError(err: unknown): string {
  const all = codes(err);
  for (const c of all) {
    if (CAUSES[c]) return CAUSES[c]!;
    if (/^(CERT_|ERR_TLS|ERR_SSL|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_)/.test(c)) return `TLS failed (${c})`;
  }
  const status = (err as { data?: { statusCode?: number }; statusCode?: number })?.data?.statusCode ?? (err as { statusCode?: number })?.statusCode;
  if (status) return `the server answered HTTP ${status}`;
  const message = err instanceof Error ? err.message : String(err);
  return all[0] ? `${message} (${all[0]})` : message;
}

/** Whether the error is the network's (worth retrying), not a wrong URL, a refusal or a bug. */
export function isNetworkFault(err: unknown): boolean {
  const status = (err as { data?: { statusCode?: number } })?.data?.statusCode;
  if (status !== undefined) return status >= 500 || status === 429;
  return codes(err).some((c) => c in CAUSES || /^(CERT_|ERR_TLS|ERR_SSL)/.test(c));
}
