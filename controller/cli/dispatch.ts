import { ArgumentError, EXIT, RambootError, exitCodeOf } from '../../lib/errors.js';
import { didYouMean, helpWidth, overview, parseVerb, verbHelp, type Rows, type Verb } from './args.js';

// From argv to a verb and back to an exit code: the one place where a verb's errors
// become a message on stderr and an exit code (the table in lib/errors.ts).

interface Stream {
  write(text: string): unknown;
  /** A terminal's width for the help text (process.stdout has them). */
  isTTY?: boolean;
  columns?: number;
}

export interface CliIO {
  stdout: Stream;
  stderr: Stream;
}

/** What `ramboot --version` and `ramboot --help` say beyond the verbs. */
export interface About {
  version?: string;
  exitCodes?: Rows;
}

export async function dispatch(verbs: Verb[], argv: string[], io: CliIO, about: About = {}): Promise<number> {
  const help = argv.includes('--help') || argv.includes('-h');
  const words = argv.filter((a) => a !== '--help' && a !== '-h');
  const out = (text: string) => (io.stdout.write(text), EXIT.OK);
  const usage = (text: string) => (io.stderr.write(text), EXIT.USAGE);
  if (words[0] === '--version' && about.version) return out(`ramboot ${about.version}\n`);
  const v = findVerb(verbs, words);
  if (v) return help ? out(verbHelp(v, helpWidth(io.stdout))) : runVerb(v, argv, io);

  const first = words[0];
  const group = first ? verbs.filter((x) => x.name.startsWith(`${first} `)) : [];
  if (group.length > 0) {
    // A group's verbs, not every verb: `ramboot secrets` asks what secrets can do.
    const sub = words[1]?.startsWith('-') ? undefined : words[1];
    if (help && !sub) return out(overview(group, { group: first, width: helpWidth(io.stdout) }));
    const subs = group.map((x) => x.name.slice(first!.length + 1));
    const problem = sub ? `unknown verb "${sub}"${didYouMean(sub, subs, true)}` : 'needs a verb';
    return usage(`ramboot ${first}: ${problem}\n\n${overview(group, { group: first, width: helpWidth(io.stderr) })}`);
  }
  const all = (width: number) => overview(verbs, { exitCodes: about.exitCodes, width });
  if (!first) return help ? out(all(helpWidth(io.stdout))) : usage(`ramboot: needs a verb\n\n${all(helpWidth(io.stderr))}`);
  const problem = first.startsWith('-')
    ? `unknown option ${first}${didYouMean(first, ['--help', ...(about.version ? ['--version'] : [])])}`
    : `unknown verb "${first}"${didYouMean(first, [...new Set(verbs.map((x) => x.name.split(' ')[0]!))], true)}`;
  return usage(`ramboot: ${problem}\n\n${all(helpWidth(io.stderr))}`);
}

async function runVerb(v: Verb, argv: string[], io: CliIO): Promise<number> {
  try {
    const { values, args } = parseVerb(v, argv.slice(v.name.split(' ').length), helpWidth(io.stderr));
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
