import { ArgumentError, EXIT, RambootError, exitCodeOf } from '../lib/errors.js';
import { overview, parseVerb, verbHelp, type Verb } from './args.js';

// From argv to a verb and back to an exit code: the one place where a verb's errors
// become a message on stderr and an exit code (the table in lib/errors.ts).

export interface CliIO {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

export async function dispatch(verbs: Verb[], argv: string[], io: CliIO, footer = ''): Promise<number> {
  const help = argv.includes('--help') || argv.includes('-h');
  const words = argv.filter((a) => a !== '--help' && a !== '-h');
  const v = findVerb(verbs, words);
  if (!v) {
    const group = words[0] ? verbs.filter((x) => x.name.startsWith(`${words[0]} `)) : [];
    if (group.length > 0) {
      const text = overview(group, footer);
      if (help) return io.stdout.write(text), EXIT.OK;
      io.stderr.write(`ramboot ${words[0]}: ${words[1] ? `unknown verb "${words[1]}"` : 'needs a verb'}\n\n${text}`);
      return EXIT.USAGE;
    }
    if (help || words.length === 0) {
      (help ? io.stdout : io.stderr).write(overview(verbs, footer));
      return help ? EXIT.OK : EXIT.USAGE;
    }
    io.stderr.write(`ramboot: unknown verb "${words[0]}"\n\n${overview(verbs, footer)}`);
    return EXIT.USAGE;
  }
  if (help) {
    io.stdout.write(verbHelp(v));
    return EXIT.OK;
  }
  try {
    const { values, args } = parseVerb(v, argv.slice(v.name.split(' ').length));
    return await v.run(values, args);
  } catch (err) {
    io.stderr.write(errorText(v.name, err));
    return exitCodeOf(err);
  }
}

function findVerb(verbs: Verb[], words: string[]): Verb | undefined {
  const two = words.slice(0, 2).join(' ');
  return verbs.find((v) => v.name === two) ?? verbs.find((v) => v.name === words[0]);
}

/** A RambootError is its message; anything else is a bug, shown with its stack only when asked. */
export function errorText(verbName: string, err: unknown): string {
  if (err instanceof ArgumentError) return `${err.message}\n`;
  if (err instanceof RambootError) return `ramboot ${verbName}: ${err.message}\n`;
  const e = err as Error;
  if (process.env.RAMBOOT_DEBUG) return `ramboot ${verbName}: internal error: ${e?.stack ?? String(err)}\n`;
  return `ramboot ${verbName}: internal error: ${e?.message ?? String(err)} (a bug in ramboot; run again with RAMBOOT_DEBUG=1 for details and report it)\n`;
}
