import { UnsafeSecretPathError } from './errors.js';

// A secret lives at secrets/<path in the image>.age. The image path comes from file
// names in a repository anyone with push access can shape, so it is checked before use:
// relative, no "." or ".." segments, no empty segments, nothing a shell or cpio would
// read differently (backslashes, control characters).

export const SECRETS_DIR = 'secrets';
const AGE_SUFFIX = '.age';

// Files that may sit in secrets/ without being secrets (placeholders, documentation).
const NOT_SECRETS = new Set(['.gitkeep', 'README.md']);

/** True for entries of secrets/ that are not secrets and are skipped everywhere. */
export function isIgnoredSecretsEntry(repoPath: string): boolean {
  return NOT_SECRETS.has(repoPath.slice(repoPath.lastIndexOf('/') + 1));
}

/** Checks an image path ("etc/x") and returns it; throws UnsafeSecretPathError. */
export function checkImagePath(path: string): string {
  const problem = imagePathProblem(path);
  if (problem) throw new UnsafeSecretPathError(path, problem);
  return path;
}

function imagePathProblem(path: string): string | undefined {
  if (path.length === 0) return 'the path is empty';
  if (path.startsWith('/')) return 'absolute path; secret paths are relative to the image root (etc/x, not /etc/x)';
  if (/[\\\u0000-\u001f\u007f]/.test(path)) return 'the path contains a backslash or a control character';
  const segments = path.split('/');
  if (segments.includes('..')) return 'the path contains ".." and would escape the image root';
  if (segments.some((s) => s === '' || s === '.')) return 'the path contains an empty or "." segment';
  return undefined;
}

/** "secrets/etc/x.age" → "etc/x"; throws UnsafeSecretPathError for anything else. */
export function imagePathOf(repoPath: string): string {
  const prefix = `${SECRETS_DIR}/`;
  if (!repoPath.startsWith(prefix)) throw new UnsafeSecretPathError(repoPath, `secret files live under ${prefix}`);
  if (!repoPath.endsWith(AGE_SUFFIX)) {
    throw new UnsafeSecretPathError(repoPath, `not an ${AGE_SUFFIX} file; everything under ${prefix} must be age-encrypted`);
  }
  const imagePath = repoPath.slice(prefix.length, -AGE_SUFFIX.length);
  const problem = imagePathProblem(imagePath);
  if (problem) throw new UnsafeSecretPathError(repoPath, problem);
  return imagePath;
}

/** "etc/x" → "secrets/etc/x.age", after checking the image path. */
export function repoPathOf(imagePath: string): string {
  return `${SECRETS_DIR}/${checkImagePath(imagePath)}${AGE_SUFFIX}`;
}
