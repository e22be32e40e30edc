import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { verbHelp } from '../../controller/cli/args.js';
import { commands, type Io } from '../../controller/cli/commands.js';
import { describeEvent, renderer, type RambootEvent } from '../../controller/render.js';
import { EXIT } from '../../lib/errors.js';
import { VERDICT_EXIT_CODE } from '../../deploy/verdict.js';
import { ramboot } from '../helpers/ramboot.js';

// The command line as a user meets it, through the real CLI (dist/): the version, help
// that fits 80 columns, suggestions for typos, a group's own usage, exit codes that
// agree with README, and plain logs that keep every line a command printed.

const root = new URL('../../', import.meta.url).pathname;
const VERBS = commands({ stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: {} } as Io);
const TOP_LEVEL = /^ {2}(init|build|deploy|up|status|plan)\b/m;

/** The codes of an exit-code list: "130, 143" is two. */
const codes = (cells: string[]) => cells.flatMap((c) => c.split(',').map((n) => Number(n.trim()))).sort((a, b) => a - b);

function readmeExitCodes(): number[] {
  const readme = readFileSync(`${root}README.md`, 'utf8');
  const section = readme.slice(readme.indexOf('## Exit codes'), readme.indexOf('\n## ', readme.indexOf('## Exit codes') + 1));
  return codes([...section.matchAll(/^\| ([\d, ]+) \|/gm)].map((m) => m[1]!));
}

function helpExitCodes(help: string): number[] {
  const section = help.slice(help.indexOf('exit codes:\n'));
  return codes([...section.matchAll(/^ {2}(\d+(?:, \d+)*) /gm)].map((m) => m[1]!));
}

describe('the command line', () => {
  it('--version prints package.json\'s version', async () => {
    const { version } = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { version: string };
    const r = await ramboot(['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`ramboot ${version}`);
  });

  it('--help and every verb\'s --help exit 0 with no line over 80 columns off a terminal', async () => {
    const names = [...VERBS.map((v) => v.name), 'secrets', 'hook'];
    expect(names).toContain('secrets add');
    for (const args of [[], ...names.map((n) => n.split(' '))]) {
      const r = await ramboot([...args, '--help']);
      expect(r.exitCode, `ramboot ${args.join(' ')} --help`).toBe(0);
      expect(r.stdout).toMatch(/^usage: ramboot /);
      expect(r.stdout.split('\n').filter((l) => l.length > 80), `ramboot ${args.join(' ')} --help`).toEqual([]);
    }
  }, 180_000);

  it('on a terminal, help is as wide as the terminal', () => {
    const up = VERBS.find((v) => v.name === 'up')!;
    const widths = verbHelp(up, 120).split('\n').map((l) => l.length);
    expect(Math.max(...widths)).toBeLessThanOrEqual(120);
    expect(Math.max(...widths)).toBeGreaterThan(80);
  });

  it('a mistyped verb gets the nearest one and the overview, exit 64', async () => {
    const r = await ramboot(['buidl']);
    expect(r.exitCode).toBe(EXIT.USAGE);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ramboot: unknown verb "buidl"; did you mean "build"\?\n\nusage: ramboot VERB/);
    expect(r.stderr).toMatch(TOP_LEVEL);

    const group = await ramboot(['secrets', 'ad']);
    expect(group.exitCode).toBe(EXIT.USAGE);
    expect(group.stderr).toMatch(/^ramboot secrets: unknown verb "ad"; did you mean "add"\?\n\nusage: ramboot secrets VERB/);

    const far = await ramboot(['xyzzy']);
    expect(far.exitCode).toBe(EXIT.USAGE);
    expect(far.stderr).toMatch(/^ramboot: unknown verb "xyzzy"\n/);
  });

  it('a mistyped option gets the nearest one and the verb\'s help, exit 64', async () => {
    const r = await ramboot(['build', '--jsn']);
    expect(r.exitCode).toBe(EXIT.USAGE);
    expect(r.stderr).toMatch(/^ramboot build: unknown option --jsn; did you mean --json\?\n\nusage: ramboot build /);
    const d = await ramboot(['deploy', '--forse']);
    expect(d.stderr).toMatch(/^ramboot deploy: unknown option --forse; did you mean --force\?/);
    const top = await ramboot(['--verison']);
    expect(top.exitCode).toBe(EXIT.USAGE);
    expect(top.stderr).toMatch(/^ramboot: unknown option --verison; did you mean --version\?/);
  });

  it('`ramboot secrets` lists the secrets verbs, not every verb, exit 64', async () => {
    const r = await ramboot(['secrets']);
    expect(r.exitCode).toBe(EXIT.USAGE);
    expect(r.stderr).toMatch(/^ramboot secrets: needs a verb\n\nusage: ramboot secrets VERB/);
    for (const v of VERBS.filter((x) => x.name.startsWith('secrets '))) expect(r.stderr).toContain(`  ${v.name}`);
    expect(r.stderr).not.toMatch(TOP_LEVEL);
    expect(r.stderr).not.toContain('exit codes:');
  });

  it('--help lists README\'s exit codes, and README lists every code ramboot uses', async () => {
    const readme = readmeExitCodes();
    expect(readme).toContain(14);
    const r = await ramboot(['--help']);
    expect(helpExitCodes(r.stdout)).toEqual(readme);
    for (const c of [...Object.values(EXIT), ...Object.values(VERDICT_EXIT_CODE), 143]) expect(readme).toContain(c);
    const deploy = await ramboot(['deploy', '--help']);
    for (const c of Object.values(VERDICT_EXIT_CODE)) expect(deploy.stdout).toMatch(new RegExp(`\\b${c}\\s+[a-z]`));
  });
});

describe('plain output (a log, CI)', () => {
  function plain() {
    const writes: string[] = [];
    const r = renderer('plain', { write: (t: string) => writes.push(t) > 0 } as unknown as NodeJS.WritableStream);
    return { r, text: () => writes.join('') };
  }

  it('prints every line a command printed, in full, however fast they come', () => {
    const { r, text } = plain();
    const lines = Array.from({ length: 300 }, (_, i) => `line ${i} ${'x'.repeat(i)}`);
    for (const line of lines) r.emit({ kind: 'output', source: 'build', line });
    r.end();
    expect(text()).toBe(lines.map((l) => `  ${l}\n`).join(''));
  });

  it('still throttles progress updates (bytes sent) to one line per 15 s', () => {
    const { r, text } = plain();
    for (let sent = 0; sent <= 100; sent += 10) r.emit({ kind: 'upload', file: '/x/base.cpio.zst', sent, total: 200 } as RambootEvent);
    expect(text().split('\n').filter(Boolean)).toHaveLength(1);
  });

  it('numbers the build\'s stages', () => {
    expect(describeEvent({ kind: 'stage', source: 'build', message: 'running setup.sh', step: { n: 6, of: 7 } })).toBe('build: [6/7] running setup.sh');
    expect(describeEvent({ kind: 'stage', source: 'vm', message: 'booting' })).toBe('vm: booting');
  });
});
