import { join, resolve } from 'node:path';

/** Where ramboot keeps images, caches and journals: --state, $RAMBOOT_STATE, or .ramboot in the repository. */
export function stateDir(flag: string | undefined, repoDir: string): string {
  return resolve(flag ?? process.env.RAMBOOT_STATE ?? join(repoDir, '.ramboot'));
}
