import type { Manifest, ManifestFile, SegmentName } from '../image/manifest.js';
import { RELEASE_FILE } from '../image/release.js';
import { isAccountFile } from './accounts.js';

// The files of two images compared from their manifests (type, mode, owner, size and
// content hash; never the mtime, which is fixed), and which of the
// changed files get a unified diff: small, world-readable text files that root/ or
// setup.sh put in the overlay.

export interface FileState {
  type: string;
  mode: number;
  uid?: number;
  gid?: number;
  size: number;
  sha256?: string;
  target?: string;
  segment: SegmentName;
}

export type FileAspect = 'type' | 'content' | 'mode' | 'owner' | 'target';

export interface FileChange {
  path: string;
  change: 'added' | 'removed' | 'changed';
  before?: FileState;
  after?: FileState;
  /** For a changed file: what differs. */
  what: FileAspect[];
  /** A unified diff, for small text files of the overlay. */
  diff?: string;
  /** Why a file of the overlay has no diff ("binary", "larger than 32 KiB", …). */
  noDiff?: string;
}

/** Files larger than this get no diff. */
export const DIFF_MAX_BYTES = 32 * 1024;

const RELEASE = RELEASE_FILE.replace(/^\//, '');

/**
 * The files a plan lists. Left out: the release file (it names the build, so it differs
 * in every image), the secrets (listed by name only, under secrets), and the account
 * files (compared as users and groups, so no password hash is ever diffed).
 */
function listed(f: ManifestFile): boolean {
  return f.segment !== 'secrets' && f.path !== RELEASE && !isAccountFile(f.path);
}

function files(m: Manifest): Map<string, ManifestFile> {
  return new Map(m.files.filter(listed).map((f) => [f.path, f]));
}

function state(f: ManifestFile): FileState {
  return {
    type: f.type ?? 'file',
    mode: f.mode,
    ...(f.uid !== undefined ? { uid: f.uid } : {}),
    ...(f.gid !== undefined ? { gid: f.gid } : {}),
    size: f.size,
    ...(f.sha256 ? { sha256: f.sha256 } : {}),
    ...(f.target !== undefined ? { target: f.target } : {}),
    segment: f.segment,
  };
}

function aspects(a: FileState, b: FileState): FileAspect[] {
  const out: FileAspect[] = [];
  if (a.type !== b.type) out.push('type');
  else if (a.type === 'file' && (a.sha256 !== b.sha256 || a.size !== b.size)) out.push('content');
  if (a.type === b.type && a.target !== b.target) out.push('target');
  if (a.mode !== b.mode) out.push('mode');
  // Images built before owners were recorded have none: nothing to compare then.
  const known = a.uid !== undefined && b.uid !== undefined;
  if (known && (a.uid !== b.uid || a.gid !== b.gid)) out.push('owner');
  return out;
}

export function compareFiles(before: Manifest, after: Manifest): FileChange[] {
  const a = files(before);
  const b = files(after);
  const out: FileChange[] = [];
  for (const path of [...new Set([...a.keys(), ...b.keys()])].sort()) {
    const x = a.get(path);
    const y = b.get(path);
    if (!x) out.push({ path, change: 'added', after: state(y!), what: [] });
    else if (!y) out.push({ path, change: 'removed', before: state(x), what: [] });
    else {
      const what = aspects(state(x), state(y));
      if (what.length > 0) out.push({ path, change: 'changed', before: state(x), after: state(y), what });
    }
  }
  return out;
}

/**
 * Why a change gets no diff, or undefined when it may get one (its contents decide the
 * rest). `quiet` reasons go without saying: packages' files, directories, symlinks.
 */
export function diffObstacle(c: FileChange): { why: string; quiet?: true } | undefined {
  const sides = [c.before, c.after].filter((s): s is FileState => s !== undefined);
  if (!sides.some((s) => s.segment === 'overlay')) return { why: 'from packages', quiet: true };
  if (sides.some((s) => s.type !== 'file')) return { why: 'not a regular file', quiet: true };
  if (c.change === 'changed' && !c.what.includes('content')) return { why: 'same content', quiet: true };
  if (sides.some((s) => (s.mode & 0o004) === 0)) return { why: 'not world-readable' };
  if (sides.some((s) => s.size > DIFF_MAX_BYTES)) return { why: `larger than ${DIFF_MAX_BYTES / 1024} KiB` };
  return undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The text of a file's contents, or undefined when they are binary (a NUL, or not UTF-8). */
export function asText(data: Buffer): string | undefined {
  if (data.includes(0)) return undefined;
  try {
    return utf8.decode(data);
  } catch {
    return undefined;
  }
}
