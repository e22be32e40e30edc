import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planImages, type Plan } from '../../plan/compare.js';
import { COMMENT_LIMIT } from '../../plan/markdown.js';
import { alpineConfig, commitAll, git, HELLO_EXTRA, HELLO_PAGE, indexRepo, localMirror, makeApk, makeRepo, writeFiles } from '../helpers/apk.js';
import { ramboot, SHARED_STATE, tempDir, type CliResult } from '../helpers/ramboot.js';
import { forgeStandin } from './forge-standin.js';
import { markdownStructure } from './helpers.js';

// The tests' local apk mirrors live in the shared test state: the operator allows it there.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

// `ramboot plan` on a real repository with one commit per kind of change, each built
// for real (Alpine offline: the fixtures' minirootfs, local apk repositories the tests
// make), planned against its parent in every format, with no identity anywhere: a plan
// must name exactly that change, exit 2, and never show a secret's value or a hash.

const HASH_1 = `$6$plansaltone$${'A1b2C3d4'.repeat(10)}xyzXYZ`;
const HASH_2 = `$6$plansalttwo$${'Z9y8X7w6'.repeat(10)}abcABC`;
const TOKEN_1 = 'api-token-value-one-3f9a1c';
const TOKEN_2 = 'api-token-value-two-7b2e4d';
/** What rc-update add does (the minirootfs has no openrc): a link in the runlevel's directory. */
const HELLO_DEFAULT = 'mkdir -p /etc/runlevels/default\nln -s /etc/init.d/hello /etc/runlevels/default/hello\n';
const BOB = `${HELLO_DEFAULT}adduser -D -s /bin/sh bob\n`;
const FSTAB = 'UUID=52A0-0B07  /media/usb  vfat  rw,noatime,fmask=0177,dmask=0077  0 0\n';
const HELLO_NEWER = { ...HELLO_PAGE, version: '1.2.4-r0', files: { ...HELLO_PAGE.files, 'var/www/hello.txt': 'hello from the hello-page package, version 1.2.4\n' } };

type Key = 'packages' | 'files' | 'services' | 'accounts' | 'kernel' | 'settings' | 'secrets';
/** The sections, in the order a plan shows them. */
const TITLES: Record<Key, string> = {
  packages: 'Packages',
  services: 'Services',
  accounts: 'Users and groups',
  kernel: 'Kernel and command line',
  settings: 'ramboot.yaml (deploy settings)',
  secrets: 'Secrets',
  files: 'Files',
};

/** setup.sh: alice with a password hash, then the lines later commits add. */
function setup(o: { more?: string; hash?: string; comment?: string } = {}): [string, number] {
  return [`#!/bin/sh\nset -e\n${o.comment ?? ''}adduser -D -s /bin/ash alice\necho 'alice:${o.hash ?? HASH_1}' | chpasswd -e\n${o.more ?? ''}`, 0o755];
}

/** The newer hello-page in a mirror of its own: a repository that switches to it upgrades the package. */
function newerMirror(): string {
  const mirror = join(SHARED_STATE, 'test-apk-mirror-plan-v1');
  if (existsSync(join(mirror, 'x86_64', 'APKINDEX.tar.gz'))) return mirror;
  const tmp = `${mirror}.tmp-${process.pid}`;
  mkdirSync(join(tmp, 'x86_64'), { recursive: true });
  indexRepo(join(tmp, 'x86_64'), [HELLO_NEWER, HELLO_EXTRA].map((p) => makeApk(p, join(tmp, 'x86_64'))));
  rmSync(mirror, { recursive: true, force: true });
  renameSync(tmp, mirror);
  return mirror;
}

function nonEmpty(p: Plan): Key[] {
  const has: Record<Key, boolean> = {
    packages: p.packages.added.length + p.packages.removed.length + p.packages.upgraded.length > 0,
    services: p.services.length > 0,
    accounts: p.accounts.length > 0,
    kernel: p.kernel.length > 0,
    settings: p.settings.length > 0,
    secrets: !!p.secrets && p.secrets.changes.length + p.secrets.recipients.added.length + p.secrets.recipients.removed.length > 0,
    files: p.files.length > 0,
  };
  return (Object.keys(TITLES) as Key[]).filter((k) => has[k]);
}

/** The section titles a text plan shows ("Files: 1 changed" lines). */
function textSections(text: string): string[] {
  return text.split('\n').flatMap((l) => Object.values(TITLES).filter((t) => l.startsWith(`${t}: `)));
}

interface Case {
  name: string;
  /** Makes the commit. */
  change(repo: string): Promise<void> | void;
  sections: Key[];
  /** The base's image from the previous case's plans serves again: the packages did not change. */
  reusesBase: boolean;
  /** Words each format must show. */
  words: string[];
  expect(plan: Plan): void;
}

describe('ramboot plan: one commit per kind of change', () => {
  let work: string;
  let repo: string;
  let env: Record<string, string>;
  let admin: string;
  let second: string;
  let hostKeyLines: string[];
  const commits: string[] = [];
  /** Every output of every run, searched for secret values at the end. */
  const outputs: string[] = [];

  const age = (name: string) => {
    execFileSync('age-keygen', ['-o', join(work, name)], { stdio: 'ignore' });
    return execFileSync('age-keygen', ['-y', join(work, name)], { encoding: 'utf8' }).trim();
  };
  const cli = async (args: string[], extraEnv: Record<string, string> = {}): Promise<CliResult> => {
    const r = await ramboot(args, { ...env, ...extraEnv });
    outputs.push(r.stdout, r.stderr);
    return r;
  };
  const plan = (base: string, head: string, format: string, extra: string[] = []) => cli(['plan', base, head, '--repo', repo, '--state', SHARED_STATE, '--format', format, ...extra]);
  const config = (o: { mirror?: string; recipients?: string[]; timeout?: string } = {}) =>
    alpineConfig(o.mirror ?? localMirror(), `health:\n  checks:\n    - name: status page\n      cmd: cat /var/www/hello.txt\n      timeout: ${o.timeout ?? '10s'}\n`).replace(
      '  recipients: []\n',
      `  recipients:\n${(o.recipients ?? [admin]).map((r) => `    - ${r}\n`).join('')}`,
    );
  const secretsAdd = async (path: string, value: string, force = false) => {
    writeFileSync(join(work, 'value'), value);
    const r = await cli(['secrets', 'add', path, '--from', join(work, 'value'), '--repo', repo, ...(force ? ['--force'] : [])]);
    expect(r.exitCode, r.stderr).toBe(0);
  };

  const cases: Case[] = [
    {
      name: 'a package added',
      change: (r) => writeFiles(r, { packages: 'hello-page\nhello-extra\n' }),
      sections: ['packages', 'files'],
      reusesBase: false,
      words: ['hello-extra', '0.1-r0 (listed)'],
      expect: (p) => {
        expect(p.packages).toEqual({ added: [{ name: 'hello-extra', version: '0.1-r0', listed: true }], removed: [], upgraded: [] });
        expect(p.files.map((f) => f.path)).toContain('usr/share/hello-extra/README');
        expect(p.files.every((f) => /^(usr\/share\/hello-extra|lib\/apk\/|etc\/apk\/world)/.test(f.path)), JSON.stringify(p.files.map((f) => f.path))).toBe(true);
        // A new package set is a new base: the deploy sends it as a delta against the old one.
        const base = p.size.upload.find((u) => u.file === 'base')!;
        expect(base).toMatchObject({ sent: true, note: expect.stringMatching(/^a delta against the base's base \(\d+ bytes whole\)$/) });
        expect(base.bytes).toBeLessThan(Number(/\((\d+) bytes whole\)/.exec(base.note!)![1]) / 4);
        expect(p.size.image.after).toBeGreaterThan(p.size.image.before);
      },
    },
    {
      name: 'a package removed',
      change: (r) => writeFiles(r, { packages: 'hello-page\n' }),
      sections: ['packages', 'files'],
      reusesBase: false,
      words: ['hello-extra'],
      expect: (p) => {
        expect(p.packages).toEqual({ added: [], removed: [{ name: 'hello-extra', version: '0.1-r0', listed: true }], upgraded: [] });
        expect(p.files.filter((f) => f.change === 'removed').map((f) => f.path)).toContain('usr/share/hello-extra/README');
      },
    },
    {
      name: 'a root/ file changed',
      change: (r) => writeFiles(r, { 'root/etc/motd': 'Welcome to the NAS.\nBackups run at 03:00.\n' }),
      sections: ['files'],
      reusesBase: true,
      words: ['etc/motd', '+Backups run at 03:00.', '-Welcome to the NAS, version 1.'],
      expect: (p) => {
        expect(p.files).toHaveLength(1);
        expect(p.files[0]).toMatchObject({ path: 'etc/motd', change: 'changed', what: ['content'] });
        expect(p.files[0]!.diff).toBe('--- a/etc/motd\n+++ b/etc/motd\n@@ -1 +1,2 @@\n-Welcome to the NAS, version 1.\n+Welcome to the NAS.\n+Backups run at 03:00.');
        // A root/-only change keeps the base: only the overlay is sent.
        expect(p.size.upload.filter((u) => u.sent).map((u) => u.file)).toEqual(['overlay', 'secrets']);
      },
    },
    {
      name: 'a service added to a runlevel',
      change: (r) => writeFiles(r, { 'setup.sh': setup({ more: HELLO_DEFAULT }) }),
      sections: ['services', 'files'],
      reusesBase: true,
      words: ['hello', 'to runlevel', 'default'],
      expect: (p) => {
        expect(p.services).toEqual([{ runlevel: 'default', added: ['hello'], removed: [] }]);
        expect(p.files.map((f) => f.path)).toEqual(['etc/runlevels/default', 'etc/runlevels/default/hello']);
      },
    },
    {
      name: 'a user added',
      change: (r) => writeFiles(r, { 'setup.sh': setup({ more: BOB }) }),
      sections: ['accounts', 'files'],
      reusesBase: true,
      words: ['bob', 'uid 1001', 'shell /bin/sh'],
      expect: (p) => {
        expect(p.accounts.map((a) => `${a.kind} ${a.name} ${a.change}`)).toEqual(['user bob added', 'group bob added']);
        expect(p.files.map((f) => f.path)).toEqual(['home/bob']);
      },
    },
    {
      name: 'a password changed',
      change: (r) => writeFiles(r, { 'setup.sh': setup({ more: BOB, hash: HASH_2 }) }),
      sections: ['accounts'],
      reusesBase: true,
      words: ['alice', 'password changed'],
      expect: (p) => expect(p.accounts).toEqual([{ kind: 'user', name: 'alice', change: 'changed', details: ['password changed'] }]),
    },
    {
      name: 'a secret rotated',
      change: () => secretsAdd('etc/api-token', TOKEN_2, true),
      sections: ['secrets'],
      reusesBase: true,
      words: ['etc/api-token', 're-encrypted'],
      expect: (p) => {
        expect(p.secrets!.changes).toEqual([{ name: 'etc/api-token', change: 'changed', details: [expect.stringMatching(/^re-encrypted/)] }]);
        expect(p.secrets!.recipients).toEqual({ added: [], removed: [] });
        // The plan built without secrets; the controller's secrets segment is new in every commit.
        expect(p.size.upload.find((u) => u.file === 'secrets')).toEqual({ file: 'secrets', sent: true, note: 'built by the controller with the decrypted secrets' });
      },
    },
    {
      name: 'a recipient added',
      change: async (r) => {
        writeFiles(r, { 'ramboot.yaml': config({ recipients: [admin, second] }) });
        const k = await cli(['secrets', 'rekey', '--repo', r, '--identity', join(work, 'admin.key')]);
        expect(k.exitCode, k.stderr).toBe(0);
      },
      sections: ['secrets'],
      reusesBase: true,
      words: ['recipient', 'secrets.recipients', '1×X25519 → 2×X25519', 'etc/api-token', 'etc/ssh/ssh_host_ed25519_key'],
      expect: (p) => {
        expect(p.secrets!.recipients).toEqual({ added: [`${second.slice(0, 16)}…${second.slice(-6)}`], removed: [] });
        expect(p.secrets!.changes.map((c) => [c.name, c.details[1]])).toEqual([
          ['etc/api-token', 'encrypted to 1×X25519 → 2×X25519'],
          ['etc/ssh/ssh_host_ed25519_key', 'encrypted to 1×X25519 → 2×X25519'],
        ]);
      },
    },
    {
      name: 'a health check changed',
      change: (r) => writeFiles(r, { 'ramboot.yaml': config({ recipients: [admin, second], timeout: '20s' }) }),
      sections: ['settings'],
      reusesBase: true,
      words: ['health.checks["status page"].timeout', '10 s', '20 s'],
      expect: (p) => expect(p.settings).toEqual([{ key: 'health.checks["status page"].timeout', before: '10 s', after: '20 s' }]),
    },
    {
      name: 'a package upgraded by a newer mirror',
      change: (r) => writeFiles(r, { 'ramboot.yaml': config({ mirror: newerMirror(), recipients: [admin, second], timeout: '20s' }) }),
      sections: ['packages', 'files'],
      reusesBase: false,
      words: ['hello-page', '1.2.3-r0 → 1.2.4-r0 (listed)'],
      expect: (p) => {
        expect(p.packages).toEqual({ added: [], removed: [], upgraded: [{ name: 'hello-page', from: '1.2.3-r0', to: '1.2.4-r0', listed: true }] });
        expect(p.files.map((f) => f.path)).toContain('var/www/hello.txt');
      },
    },
  ];

  beforeAll(async () => {
    work = tempDir('plan');
    mkdirSync(join(work, 'home'));
    // No identity anywhere: a HOME without ramboot's keys, no $RAMBOOT_IDENTITY, no secrets.identity.
    env = { HOME: join(work, 'home'), RAMBOOT_IDENTITY: '' };
    admin = age('admin.key');
    second = age('second.key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'nas host key', '-f', join(work, 'host')]);
    const hostKey = readFileSync(join(work, 'host'), 'utf8');
    hostKeyLines = hostKey.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----'));
    repo = makeRepo({
      'ramboot.yaml': config(),
      packages: 'hello-page\n',
      'setup.sh': setup(),
      'root/boot/vmlinuz-test': 'not a real kernel: the build only copies it\n',
      'root/etc/hostname': 'alpine-test\n',
      'root/etc/motd': 'Welcome to the NAS, version 1.\n',
      'root/etc/fstab': FSTAB,
      'root/etc/init.d/hello': ['#!/sbin/openrc-run\ncommand=/bin/true\n', 0o755],
    });
    await secretsAdd('etc/api-token', TOKEN_1);
    await secretsAdd('etc/ssh/ssh_host_ed25519_key', hostKey);
    commits.push(commitAll(repo, 'secrets'));
    for (const c of cases) {
      await c.change(repo);
      commits.push(commitAll(repo, c.name));
    }
  });

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
    if (repo) rmSync(join(repo, '..'), { recursive: true, force: true });
  });

  cases.forEach((c, i) => {
    it(`names exactly ${c.name}, in text, Markdown and JSON, and exits 2`, async () => {
      const [base, head] = [commits[i]!, commits[i + 1]!];
      const json = await plan(base, head, 'json');
      expect(json.exitCode, json.stderr.slice(-2000)).toBe(2);
      const p = JSON.parse(json.stdout) as Plan;
      expect(nonEmpty(p)).toEqual(c.sections);
      expect([p.base.commit, p.head.commit]).toEqual([base, head]);
      c.expect(p);

      const text = await plan(base, head, 'text');
      expect(text.exitCode).toBe(2);
      // The previous case's plans built this base as their head.
      for (const r of [json, text]) expect(r.stderr).toContain(c.reusesBase ? "reusing the base's image from an earlier plan" : 'building the base');
      expect(textSections(text.stdout)).toEqual(c.sections.map((k) => TITLES[k]));
      const md = await plan(base, head, 'markdown');
      expect(md.exitCode).toBe(2);
      const s = markdownStructure(md.stdout);
      expect(s.problems).toEqual([]);
      expect(s.summaries.map((x) => x.split(':')[0])).toEqual([...c.sections.map((k) => TITLES[k]), 'Size and upload']);
      for (const w of c.words) {
        expect(text.stdout, `text shows ${w}`).toContain(w);
        expect(md.stdout.replace(/`/g, ''), `markdown shows ${w}`).toContain(w);
      }
    });
  });

  it('says no change to the machine for a commit that changes only a comment in setup.sh, and exits 0', async () => {
    writeFiles(repo, { 'setup.sh': setup({ more: BOB, hash: HASH_2, comment: '# The users of the machine.\n' }) });
    const head = commitAll(repo, 'a comment');
    const base = commits[commits.length - 1]!;
    for (const format of ['text', 'markdown', 'json']) {
      const r = await plan(base, head, format);
      expect(r.exitCode, `${format}: ${r.stdout.slice(0, 3000)}`).toBe(0);
      if (format === 'json') {
        const p = JSON.parse(r.stdout) as Plan;
        expect(p.changes).toBe(0);
        expect(nonEmpty(p)).toEqual([]);
      } else {
        expect(r.stdout).toContain('no change to the machine');
      }
    }
    commits.push(head);
  });

  it('plans the controller\'s own images, built with their secrets, without ever reading the secrets segment', async () => {
    const i = cases.findIndex((c) => c.name === 'a secret rotated');
    const images = join(work, 'controller-images');
    const build = async (commit: string) => {
      const r = await cli(['build', '--repo', repo, '--rev', commit, '--state', SHARED_STATE, '--images', images, '--json'], { RAMBOOT_IDENTITY: join(work, 'admin.key') });
      expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
      return (JSON.parse(r.stdout) as { imageDir: string }).imageDir;
    };
    const [a, b] = [await build(commits[i]!), await build(commits[i + 1]!)];
    const sizes = [a, b].map((d) => (JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8')) as { segments: { name: string; bytes: number }[] }).segments.find((x) => x.name === 'secrets')!.bytes);
    // Were the plan to read a secrets segment, it would fail on these.
    for (const d of [a, b]) writeFileSync(join(d, 'secrets.cpio.zst'), 'not an archive');
    const p = await planImages(a, b, { repoDir: repo });
    outputs.push(JSON.stringify(p));
    expect(nonEmpty(p)).toEqual(['secrets']);
    expect(p.secrets!.changes.map((c) => c.name)).toEqual(['etc/api-token']);
    expect(p.files).toEqual([]);
    expect(p.size.upload.find((u) => u.file === 'secrets')).toEqual({ file: 'secrets', bytes: sizes[1], sent: true });
    expect(sizes[0]).toBeGreaterThan(100);
  });

  it('posts the Markdown plan as the machine\'s one comment: created first, updated after (a stand-in for the Gitea API)', async () => {
    const standin = await forgeStandin('gitea', 'ci-token', 'alice/nas', 3);
    try {
      const args = ['--comment', 'gitea', '--api-url', standin.apiUrl, '--repository', 'alice/nas', '--pr', '3'];
      const first = await plan(commits[2]!, commits[3]!, 'text', args);
      expect(first.exitCode, first.stderr).toBe(1);
      expect(first.stderr).toContain('no token; set RAMBOOT_FORGE_TOKEN');
      expect(standin.requests).toEqual([]);
      const withToken = { RAMBOOT_FORGE_TOKEN: 'ci-token' };
      const created = await cli(['plan', commits[2]!, commits[3]!, '--repo', repo, '--state', SHARED_STATE, ...args], withToken);
      expect(created.exitCode, created.stderr).toBe(2);
      expect(created.stderr).toMatch(/ramboot plan: created the plan comment on alice\/nas#3/);
      const updated = await cli(['plan', commits[2]!, commits[3]!, '--repo', repo, '--state', SHARED_STATE, ...args], withToken);
      expect(updated.stderr).toMatch(/ramboot plan: updated the plan comment on alice\/nas#3/);
      expect(standin.comments).toHaveLength(1);
      expect(standin.comments[0]!.body.startsWith('<!-- ramboot-plan host="alpine-test" -->\n')).toBe(true);
      expect(standin.comments[0]!.body).toContain('<summary>Files: 1 changed</summary>');
      expect(standin.requests.map((r) => r.method)).toEqual(['GET', 'POST', 'GET', 'PATCH']);
      outputs.push(...standin.comments.map((c) => c.body));
    } finally {
      await standin.close();
    }
  });

  it('cuts the Markdown of thousands of changed files to fit a comment, says what it cut, and keeps <details> balanced', async () => {
    const base = commits[commits.length - 1]!;
    const files: Record<string, string> = {};
    for (let i = 0; i < 3000; i++) files[`root/srv/www/page-${String(i).padStart(4, '0')}.html`] = `<html><body><p>Page ${i}</p>\n<p>of the family web site</p></body></html>\n`;
    writeFiles(repo, files);
    const head = commitAll(repo, 'a web site');
    const out = join(work, 'plan.md');
    const r = await plan(base, head, 'markdown', ['--out', out]);
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(2);
    expect(r.stdout).toBe('');
    const md = readFileSync(out, 'utf8');
    outputs.push(md);
    expect(Buffer.byteLength(md)).toBeLessThanOrEqual(COMMENT_LIMIT);
    expect(md).toMatch(/> Cut to fit a comment \(65,536 characters\): files \([\d,]+ of 3,001 not shown\)\./);
    expect(md).toMatch(/_… [\d,]+ more not shown: the comment is limited to 65,536 characters/);
    const s = markdownStructure(md);
    expect(s.problems).toEqual([]);
    expect(s.summaries).toEqual(['Files: 3001 added', 'Size and upload']);
    const json = JSON.parse((await plan(base, head, 'json')).stdout) as Plan;
    expect(json.files).toHaveLength(3001);
  });

  it('resolves a relative revision such as HEAD~1 with git, and names a revision it cannot resolve', async () => {
    // HEAD~1 only added a comment to setup.sh.
    const r = await cli(['plan', 'HEAD~2', 'HEAD~1', '--repo', repo, '--state', SHARED_STATE, '--format', 'json']);
    expect(r.exitCode, r.stderr.slice(-1000)).toBe(0);
    const p = JSON.parse(r.stdout) as Plan;
    expect([p.base.commit, p.head.commit]).toEqual([git(repo, 'rev-parse', 'HEAD~2').trim(), git(repo, 'rev-parse', 'HEAD~1').trim()]);
    const bad = await cli(['plan', 'no-such-branch', '--repo', repo, '--state', SHARED_STATE]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.trim()).toBe(`ramboot plan: failed to resolve revision "no-such-branch" in ${repo}: no such branch, tag or commit`);
  });

  it('shows no secret value and no password hash in any output', () => {
    expect(outputs.length).toBeGreaterThan(30);
    const all = outputs.join('\n');
    for (const secret of [TOKEN_1, TOKEN_2, HASH_1, HASH_2, ...hostKeyLines]) expect(all.includes(secret), `output shows ${secret.slice(0, 12)}…`).toBe(false);
    // Nor pieces of a hash: the salt or the digest on their own.
    for (const piece of ['plansaltone', 'plansalttwo', 'A1b2C3d4A1b2', 'Z9y8X7w6Z9y8']) expect(all).not.toContain(piece);
    expect(all).not.toMatch(/AGE-SECRET-KEY-1/);
  });
});
