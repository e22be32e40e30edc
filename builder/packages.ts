import { ConfigError } from '../lib/errors.js';

/** The `packages` file: one package per line; `#` comments and blank lines ignored. */
export function parsePackages(text: string, file = 'packages'): string[] {
  const out: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    if (!/^[A-Za-z0-9][A-Za-z0-9+._:=<>~-]*$/.test(line)) {
      throw new ConfigError(file, i + 1, undefined, `"${line}" is not a package name (one package per line)`);
    }
    out.push(line);
  });
  return out;
}
