import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BuildError } from '../lib/errors.js';

/** Resolves an owner or group given by name against the new root's /etc/passwd or /etc/group. */
export function resolveId(root: string, kind: 'passwd' | 'group', value: string | number, context: string): number {
  if (typeof value === 'number' || /^\d+$/.test(value)) return Number(value);
  const file = join(root, 'etc', kind);
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  for (const line of text.split('\n')) {
    const [name, , id] = line.split(':');
    if (name === value && id !== undefined) return Number(id);
  }
  throw new BuildError(`failed to resolve ${kind === 'passwd' ? 'owner' : 'group'} "${value}" of ${context}: not in the image's /etc/${kind}`, {
    step: 'resolve owners',
    input: context,
  });
}
