import { realpathSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { UsageError } from '../../lib/errors.js';

// A local distro.mirror is a directory of the build host that the package manager reads
// (Alpine: bound into its sandbox). A commit names it, so a commit could name any
// directory of the host: it is used only inside the repository's own tree or under a
// directory the operator allows in the controller's environment.

/** Colon-separated host directories a commit may name as a local mirror. */
export const MIRRORS_ENV = 'RAMBOOT_MIRRORS';

/** The real path of the mirror directory, once it is known to be one a commit may use. */
export function localMirrorDir(repoDir: string, mirror: string): string {
  const path = realPath(isAbsolute(mirror) ? mirror : join(repoDir, mirror));
  if (path === undefined) {
    throw new UsageError(`failed to use distro.mirror ${mirror} (ramboot.yaml): no such directory on the build host`, { step: 'check distro.mirror', input: mirror });
  }
  const allowed = [realPath(repoDir), ...operatorMirrors()].filter((d): d is string => d !== undefined);
  if (allowed.some((d) => path === d || path.startsWith(`${d}/`))) return path;
  throw new UsageError(
    `failed to use distro.mirror ${mirror} (ramboot.yaml): ${path} is neither inside the repository nor under a directory ${MIRRORS_ENV} allows; ` +
      `use a mirror directory committed in the repository (a relative path), or allow its directory by starting ramboot with ${MIRRORS_ENV}=/srv/apk (colon-separated)`,
    { step: 'check distro.mirror', input: mirror },
  );
}

function operatorMirrors(): (string | undefined)[] {
  return (process.env[MIRRORS_ENV] ?? '').split(':').filter((d) => isAbsolute(d)).map(realPath);
}

function realPath(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}
