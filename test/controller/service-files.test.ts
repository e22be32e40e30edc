import { execa } from 'execa';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/ramboot.js';

// The README: `controller/service/ramboot.service` (systemd) and
// `controller/service/ramboot.openrc` (OpenRC) run one controller per machine, the
// controller being `node dist/controller/cli.js up --repo REPO` (its first command).
// These are the files as shipped, checked by the tools that will read them: systemd's
// own verifier, and a POSIX shell sourcing the OpenRC script as openrc-run does.

const here = new URL('../../', import.meta.url).pathname;
const UNIT = join(here, 'controller/service/ramboot.service');
const OPENRC = join(here, 'controller/service/ramboot.openrc');

/** The command line the README's first command runs: node, the compiled CLI, `up --repo`. */
const README_COMMAND = /\bnode (dist\/controller\/cli\.js) up --repo\b/;

describe('controller/service/ramboot.service', () => {
  it('systemd-analyze verify accepts the unit, installed as ramboot@nas.service, without a warning (in the copy, ExecStart\'s /usr/bin/node is replaced by a stub executable in a temp dir, so the check does not depend on where node is)', async () => {
    const dir = tempDir('unit');
    const stub = join(dir, 'node');
    writeFileSync(stub, '#!/bin/sh\nexit 0\n');
    chmodSync(stub, 0o755);
    const text = readFileSync(UNIT, 'utf8');
    const exec = text.split('\n').filter((l) => l.startsWith('ExecStart='));
    expect(exec).toHaveLength(1);
    expect(exec[0]).toMatch(/^ExecStart=\/usr\/bin\/node /);
    const unit = join(dir, 'ramboot@nas.service');
    writeFileSync(unit, text.replace(/^ExecStart=\/usr\/bin\/node /m, `ExecStart=${stub} `));
    // verify exits 0 on a key it ignores (a misspelled TimeoutStopSec, an unknown signal): it says so on stderr.
    const r = await execa('systemd-analyze', ['verify', unit], { reject: false, env: { ...process.env, SYSTEMD_LOG_LEVEL: 'notice' } });
    expect({ exitCode: r.exitCode, stderr: r.stderr, stdout: r.stdout }).toEqual({ exitCode: 0, stderr: '', stdout: '' });
  });

  it('ExecStart runs the README\'s command, `node …/dist/controller/cli.js up --repo`, the CLI the build makes, with the instance\'s RAMBOOT_ARGS (another machine\'s --listen), and accepts its clean-stop exit code', () => {
    const text = readFileSync(UNIT, 'utf8');
    const exec = /^ExecStart=(.*)$/m.exec(text)![1]!;
    // $RAMBOOT_ARGS unbraced: systemd splits it into words (none when unset), as the OpenRC script's.
    const m = /^\/usr\/bin\/node \S*\/(dist\/controller\/cli\.js) up --repo \$\{RAMBOOT_REPO\} \$RAMBOOT_ARGS$/.exec(exec);
    expect(m, exec).not.toBeNull();
    const readme = readFileSync(join(here, 'README.md'), 'utf8');
    expect(README_COMMAND.exec(readme)?.[1]).toBe(m![1]);
    // The file the build compiles (tsconfig's outDir): the one tests run.
    expect(existsSync(join(here, m![1]!))).toBe(true);
    // The README: SIGTERM stops `ramboot up` cleanly with 143.
    expect(text).toMatch(/^SuccessExitStatus=.*\b143\b/m);
    expect(text).toMatch(/^Environment=RAMBOOT_REPO=\/srv\/git\/%i\.git$/m);
  });
});

/** openrc-run's functions and variables, stubbed: each records its call on stdout. */
const OPENRC_STUBS = `
ebegin() { echo "ebegin $*"; }
eend() { echo "eend $*"; return 0; }
einfo() { echo "einfo $*"; }
ewarn() { echo "ewarn $*"; }
eerror() { echo "eerror $*"; }
checkpath() { echo "checkpath $*"; }
need() { echo "need $*"; }
use() { echo "use $*"; }
want() { echo "want $*"; }
after() { echo "after $*"; }
before() { echo "before $*"; }
provide() { echo "provide $*"; }
keyword() { echo "keyword $*"; }
`;

/** Sources the script as openrc-run would for service RC_SVCNAME (with /etc/conf.d's settings first) and prints what it defined. */
async function sourceOpenrc(svcname: string, confd: string): Promise<Record<string, string>> {
  const script = `${OPENRC_STUBS}
RC_SVCNAME=${svcname}
${confd}
. "$1"
printf 'command=%s\\n' "$command"
printf 'command_args=%s\\n' "$command_args"
printf 'command_background=%s\\n' "$command_background"
printf 'pidfile=%s\\n' "$pidfile"
printf 'retry=%s\\n' "$retry"
printf 'description=%s\\n' "$description"
printf 'umask=%s\\n' "$(umask)"
command -v depend >/dev/null && printf 'depend=%s\\n' "$(depend | tr '\\n' ';')"
`;
  // dash, Debian's /bin/sh: stricter than busybox ash, Alpine's openrc-run shell.
  const r = await execa('sh', ['-c', script, 'sh', OPENRC], { env: { PATH: process.env.PATH! } });
  expect(r.stderr).toBe('');
  return Object.fromEntries(r.stdout.split('\n').filter((l) => /^[a-z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

describe('controller/service/ramboot.openrc', () => {
  it('is an openrc-run script that sh -n parses', async () => {
    expect(readFileSync(OPENRC, 'utf8').split('\n')[0]).toBe('#!/sbin/openrc-run');
    const r = await execa('sh', ['-n', OPENRC], { reject: false });
    expect({ exitCode: r.exitCode, stderr: r.stderr }).toEqual({ exitCode: 0, stderr: '' });
  });

  it('sourced with openrc-run\'s functions stubbed, as /etc/init.d/ramboot.nas it runs the README\'s command `node dist/controller/cli.js up --repo /srv/git/nas.git` in the background, needs the network, and stops on TERM', async () => {
    const v = await sourceOpenrc('ramboot.nas', '');
    expect(v.command).toBe('/usr/bin/node');
    const m = /^(\S*\/(dist\/controller\/cli\.js)) up --repo (\S+)\s*$/.exec(v.command_args!);
    expect(m, v.command_args).not.toBeNull();
    expect(m![3]).toBe('/srv/git/nas.git');
    const readme = readFileSync(join(here, 'README.md'), 'utf8');
    expect(README_COMMAND.exec(readme)?.[1]).toBe(m![2]);
    expect(v.command_background).toBe('yes');
    expect(v.pidfile).toBe('/run/ramboot.nas.pid');
    expect(v.retry).toMatch(/^TERM\//);
    expect(v.description).toBe('ramboot controller for nas');
    expect(v.umask).toBe('0077');
    expect(v.depend).toMatch(/(^|;)need net(;|$)/);
  });

  it('takes the repository and further options from /etc/conf.d (RAMBOOT_REPO, RAMBOOT_ARGS), as its install comment says', async () => {
    const v = await sourceOpenrc('ramboot.nas', `RAMBOOT_REPO=/srv/git/other.git\nRAMBOOT_ARGS='--signers /etc/ramboot/signers --listen 127.0.0.1:8181'`);
    expect(v.command_args).toMatch(/ up --repo \/srv\/git\/other\.git --signers \/etc\/ramboot\/signers --listen 127\.0\.0\.1:8181$/);
  });
});
