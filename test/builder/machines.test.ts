import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirSource, machineSource, parseSourceConfig } from '../../builder/source.js';
import { parseConfigLayers } from '../../lib/config.js';
import { ConfigError } from '../../lib/errors.js';
import { machineState } from '../../controller/state.js';
import { HELLO_EXTRA, commitAll, git, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { SHARED_STATE, ramboot, tempDir, type Built } from '../helpers/ramboot.js';
import { forgeStandin } from '../plan/forge-standin.js';

// Several machines from one repository: what they share at the top level, what differs in
// machines/NAME/ (its ramboot.yaml laid over the top's, its packages added, its files
// replacing the top's). Real builds of the minimal Alpine repository from the local mirror.

const TOP = `host:
  name: shared
distro:
  name: alpine
  release: v3.20
boot:
  kernel: vmlinuz-*
  append: console=ttyS0
health:
  checks:
    - name: page
      cmd: "true"
secrets:
  recipients: []
`;

describe('ramboot.yaml laid over ramboot.yaml (a machine\'s over the repository\'s)', () => {
  it('merges maps key by key; a list or a value in the machine\'s file replaces the repository\'s', () => {
    const c = parseConfigLayers([
      { text: TOP, file: 'ramboot.yaml' },
      { text: 'host:\n  name: backup\n  address: 192.0.2.7\nhealth:\n  checks: []\n', file: 'machines/backup/ramboot.yaml' },
    ]);
    expect(c.host).toMatchObject({ name: 'backup', address: '192.0.2.7' });
    expect(c.distro.release).toBe('v3.20');
    expect(c.boot.append).toBe('console=ttyS0');
    expect(c.health.checks).toEqual([]);
  });

  it('reports a problem in the file and line that set the key at fault', () => {
    const bad = () => parseConfigLayers([
      { text: TOP, file: 'ramboot.yaml' },
      { text: 'host:\n  name: backup\n  adress: 192.0.2.7\n', file: 'machines/backup/ramboot.yaml' },
    ]);
    expect(bad).toThrow(ConfigError);
    expect(bad).toThrow(/machines\/backup\/ramboot.yaml, line 3, key host.adress: unknown key/);
    const top = () => parseConfigLayers([
      { text: TOP.replace('release: v3.20', 'release: 3'), file: 'ramboot.yaml' },
      { text: 'host:\n  name: backup\n', file: 'machines/backup/ramboot.yaml' },
    ]);
    expect(top).toThrow(/^ramboot.yaml, line 5, key distro.release/);
  });
});

describe('a machine\'s view of the repository (machines/NAME/ mirrors the top level)', () => {
  let dir: string;
  const file = (path: string, text: string) => {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), text);
  };

  beforeAll(() => {
    dir = tempDir('machines-view');
    file('ramboot.yaml', TOP);
    file('packages', 'hello-page\n');
    file('root/etc/motd', 'shared motd\n');
    file('root/etc/hostname', 'shared\n');
    file('machines/nas/ramboot.yaml', 'host:\n  name: nas\n');
    file('machines/nas/root/etc/hostname', 'nas\n');
    file('machines/backup/ramboot.yaml', 'host:\n  name: backup\n');
    file('machines/backup/packages', 'hello-extra\n');
  });

  it('shows the machine\'s files over the shared ones, its packages after the shared ones, and no other machine\'s files', async () => {
    const nas = await machineSource(await dirSource(dir), 'nas');
    expect((await parseSourceConfig(nas)).host.name).toBe('nas');
    expect(String(await nas.readFile('root/etc/hostname'))).toBe('nas\n');
    expect(String(await nas.readFile('root/etc/motd'))).toBe('shared motd\n');
    expect((await nas.list('root')).map((f) => f.path)).toEqual(['root/etc/hostname', 'root/etc/motd']);
    expect((await nas.list('')).some((f) => f.path.startsWith('machines/'))).toBe(false);
    const backup = await machineSource(await dirSource(dir), 'backup');
    expect(String(await backup.readFile('packages'))).toBe('hello-page\nhello-extra\n');
    expect(String(await backup.readFile('root/etc/hostname'))).toBe('shared\n');
  });

  it('changes a machine\'s tree hash with its own or the shared files, never with another machine\'s', async () => {
    const hashes = async () => Promise.all(['nas', 'backup'].map(async (m) => (await machineSource(await dirSource(dir), m)).treeHash));
    const [nas0, backup0] = await hashes();
    file('machines/backup/root/etc/motd', 'the backup target\n');
    const [nas1, backup1] = await hashes();
    expect(nas1).toBe(nas0);
    expect(backup1).not.toBe(backup0);
    file('root/etc/motd', 'shared motd, changed\n');
    const [nas2, backup2] = await hashes();
    expect(nas2).not.toBe(nas1);
    // backup's own motd hides the shared one: the change is not backup's.
    expect(backup2).toBe(backup1);
  });

  it('refuses a machine the repository does not describe, naming the ones it does', async () => {
    await expect(machineSource(await dirSource(dir), 'router')).rejects.toThrow(/failed to read machine "router" from directory .*: its machines are backup, nas/);
  });
});

describe('building the machines of one repository', () => {
  let repo: string;
  let work: string;
  const build = async (extra: string[]) => ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images'), '--json', ...extra]);
  const built = async (machine: string): Promise<Built> => {
    const r = await build(['--machine', machine]);
    expect(r.exitCode, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Built;
  };
  const sha = (b: Built, name: string) => b.segments.find((s) => s.name === name)!.sha256;

  beforeAll(() => {
    work = tempDir('machines-build');
    const files = minimalAlpineFiles(localMirror());
    const top = parse(String(files['ramboot.yaml']));
    delete top.host;
    files['ramboot.yaml'] = stringify(top);
    // Without the build id in a file (the helper's setup.sh writes it): an image then differs from the last only where its files do.
    files['setup.sh'] = ['#!/bin/sh\nset -e\necho "setup.sh ran" > /var/www/setup.txt\n', 0o755];
    repo = makeRepo({
      ...files,
      'machines/nas/ramboot.yaml': 'host:\n  name: nas\n',
      'machines/nas/root/etc/hostname': 'nas\n',
      'machines/backup/ramboot.yaml': 'host:\n  name: backup\n',
      'machines/backup/root/etc/hostname': 'backup\n',
      'machines/lab/ramboot.yaml': 'host:\n  name: lab\n',
      'machines/lab/packages': `${HELLO_EXTRA.name}\n`,
    });
  });

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('builds each machine: machines whose files differ share the base segment; one with a package more has a base of its own', async () => {
    const nas = await built('nas');
    const backup = await built('backup');
    const lab = await built('lab');
    expect(sha(backup, 'base')).toBe(sha(nas, 'base'));
    expect(sha(backup, 'overlay')).not.toBe(sha(nas, 'overlay'));
    expect(sha(lab, 'base')).not.toBe(sha(nas, 'base'));
    const manifest = (b: Built) => JSON.parse(readFileSync(join(b.imageDir, 'manifest.json'), 'utf8'));
    expect(manifest(nas).settings.host.name).toBe('nas');
    expect(manifest(lab).packages.map((p: { name: string }) => p.name)).toContain(HELLO_EXTRA.name);
    expect(manifest(nas).packages.map((p: { name: string }) => p.name)).not.toContain(HELLO_EXTRA.name);
  }, 10 * 60_000);

  it('a commit that changes only one machine\'s files leaves the other machines\' builds as they were', async () => {
    const before = await built('nas');
    writeFiles(repo, { 'machines/backup/root/etc/motd': 'only the backup target changes\n' });
    commitAll(repo, 'the backup target only');
    const after = await built('nas');
    // What the machine runs is the same: the build's inputs and its base. Only the release file
    // (it names the commit) differs in the overlay.
    expect(after.buildId.split('-')[1]).toBe(before.buildId.split('-')[1]);
    expect(sha(after, 'base')).toBe(sha(before, 'base'));
  }, 10 * 60_000);

  it('plan --machine shows the change as that machine sees it: none for a machine whose files did not change', async () => {
    writeFiles(repo, { 'machines/backup/root/etc/issue': 'the backup target, planned\n' });
    commitAll(repo, 'a change to the backup target only');
    const plan = (m: string) => ramboot(['plan', 'HEAD~1', 'HEAD', '--repo', repo, '--machine', m, '--state', join(work, 'plan-state'), '--format', 'json']);
    const nas = await plan('nas');
    expect(nas.exitCode, nas.stdout).toBe(0);
    const backup = await plan('backup');
    expect(backup.exitCode, backup.stderr).toBe(2);
    expect(JSON.parse(backup.stdout).files.map((f: { path: string }) => f.path)).toContain('etc/issue');
    expect(JSON.parse(backup.stdout).host).toBe('backup');
  }, 10 * 60_000);

  it('plan without --machine plans every machine: one output and one pull request comment (a stand-in for the Gitea API), a section per machine that changes, the others listed with no change', async () => {
    writeFiles(repo, { 'machines/backup/root/etc/issue': 'the backup target, planned again\n', 'machines/lab/root/etc/issue': 'the lab, planned\n' });
    commitAll(repo, 'a change to the backup target and the lab');
    const state = join(work, 'plan-state');
    const text = await ramboot(['plan', 'HEAD~1', 'HEAD', '--repo', repo, '--state', state]);
    expect(text.exitCode, text.stderr).toBe(2);
    expect(text.stdout).toMatch(/^machine nas \(nas\): no change$/m);
    expect(text.stdout).toMatch(/^== machine backup\nramboot plan for backup: /m);
    expect(text.stdout).toMatch(/^== machine lab\nramboot plan for lab: /m);
    const json = JSON.parse((await ramboot(['plan', 'HEAD~1', 'HEAD', '--repo', repo, '--state', state, '--format', 'json'])).stdout);
    expect(Object.keys(json.machines).sort()).toEqual(['backup', 'lab', 'nas']);
    expect(json.machines.nas.changes).toBe(0);
    expect(json.machines.lab.files.map((f: { path: string }) => f.path)).toContain('etc/issue');
    const standin = await forgeStandin('gitea', 'ci-token', 'alice/nas', 5);
    try {
      const args = ['plan', 'HEAD~1', 'HEAD', '--repo', repo, '--state', state, '--comment', 'gitea', '--api-url', standin.apiUrl, '--repository', 'alice/nas', '--pr', '5'];
      for (let i = 0; i < 2; i++) expect((await ramboot(args, { RAMBOOT_FORGE_TOKEN: 'ci-token' })).exitCode).toBe(2);
      expect(standin.comments).toHaveLength(1);
      const body = standin.comments[0]!.body;
      expect(body.startsWith('<!-- ramboot-plan machines -->\n### ramboot plan: 2 of 3 machines change\n')).toBe(true);
      expect(body).toMatch(/^- machine nas \(nas\): no change$/m);
      expect(body).toMatch(/^- \*\*machine backup \(backup\): /m);
      expect(body).toMatch(/^#### machine backup$/m);
      expect(body).toMatch(/^#### machine lab$/m);
      expect(body).not.toMatch(/^#### machine nas$/m);
      expect(body.match(/<details>/g)?.length).toBe(body.match(/<\/details>/g)?.length);
    } finally {
      await standin.close();
    }
  }, 10 * 60_000);

  it('each machine has a state directory of its own, which its images name (deploy --image finds it)', async () => {
    const nas = await built('nas');
    const manifest = JSON.parse(readFileSync(join(nas.imageDir, 'manifest.json'), 'utf8'));
    expect(manifest.machine).toBe('nas');
    const dirs = [undefined, 'nas', 'backup'].map((m) => machineState({ origin: manifest.origin, machine: m }).dir);
    expect(new Set(dirs).size).toBe(3);
    expect(machineState({ state: '/srv/ramboot', origin: manifest.origin, machine: 'nas' }).dir).toBe('/srv/ramboot/machines/nas');
  });

  it('check looks at every machine as it sees the repository, and names the machine of a problem', async () => {
    const lines = (r: { stdout: string; stderr: string }) => `${r.stdout}${r.stderr}`.split('\n').filter((l) => /^\s*machine \w+: /.test(l)).map((l) => l.trim());
    // No machine here has its SSH host key secret yet: each is named for it.
    const before = await ramboot(['check', '--repo', repo]);
    expect(before.exitCode).toBe(1);
    for (const m of ['backup', 'lab', 'nas']) expect(lines(before).some((l) => l.startsWith(`machine ${m}: secrets/etc/ssh/ssh_host_ed25519_key.age is missing`))).toBe(true);
    writeFiles(repo, { 'machines/lab/ramboot.yaml': 'host:\n  name: lab\n  adress: 192.0.2.9\n' });
    commitAll(repo, 'a typo in one machine');
    const after = await ramboot(['check', '--repo', repo]);
    const added = lines(after).filter((l) => !lines(before).includes(l));
    expect(added).toEqual([expect.stringMatching(/^machine lab: machines\/lab\/ramboot.yaml, line 3, key host.adress: unknown key/)]);
    git(repo, 'reset', '-q', '--hard', 'HEAD~1');
  });

  it('without --machine, the build names the machines and asks for one', async () => {
    const r = await build([]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/describes several machines \(backup, lab, nas\): name one with --machine/);
  });
});

describe('each machine\'s own secrets (ramboot secrets --machine)', () => {
  let repo: string;
  let env: Record<string, string>;
  let work: string;

  beforeAll(() => {
    work = tempDir('machines-secrets');
    execFileSync('age-keygen', ['-o', join(work, 'key.txt')], { stdio: 'ignore' });
    const recipient = /public key: (age1\S+)/.exec(readFileSync(join(work, 'key.txt'), 'utf8'))![1]!;
    env = { RAMBOOT_IDENTITY: join(work, 'key.txt') };
    const files = minimalAlpineFiles(localMirror());
    const top = parse(String(files['ramboot.yaml']));
    top.secrets.recipients = [recipient];
    files['ramboot.yaml'] = stringify(top);
    repo = makeRepo({ ...files, 'machines/nas/ramboot.yaml': 'host:\n  name: nas\n', 'machines/backup/ramboot.yaml': 'host:\n  name: backup\n' });
  });

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('gives each machine a host key of its own in machines/NAME/secrets/, which its image carries and its controller pins', async () => {
    const lines: Record<string, string> = {};
    for (const m of ['nas', 'backup']) {
      const add = await ramboot(['secrets', 'add', 'etc/ssh/ssh_host_ed25519_key', '--generate', 'ssh-ed25519', '--machine', m, '--repo', repo], env);
      expect(add.exitCode, add.stderr).toBe(0);
      expect(existsSync(join(repo, 'machines', m, 'secrets/etc/ssh/ssh_host_ed25519_key.age'))).toBe(true);
    }
    expect(existsSync(join(repo, 'secrets/etc/ssh/ssh_host_ed25519_key.age'))).toBe(false);
    commitAll(repo, 'a host key per machine');
    for (const m of ['nas', 'backup']) {
      const key = await ramboot(['secrets', 'hostkey', '--machine', m, '--repo', repo], env);
      expect(key.exitCode, key.stderr).toBe(0);
      lines[m] = key.stdout.trim().split('\n')[1]!;
      const b = await ramboot(['build', '--repo', repo, '--machine', m, '--state', SHARED_STATE, '--images', join(work, 'images'), '--json'], env);
      expect(b.exitCode, b.stderr).toBe(0);
      const manifest = JSON.parse(readFileSync(join((JSON.parse(b.stdout) as Built).imageDir, 'manifest.json'), 'utf8'));
      expect(manifest.hostKey).toBe(lines[m]);
    }
    expect(lines.nas).not.toBe(lines.backup);
  }, 10 * 60_000);

  it('manages the shared secrets/ without --machine when the repository\'s ramboot.yaml leaves host to each machine', async () => {
    const top = parse(readFileSync(join(repo, 'ramboot.yaml'), 'utf8'));
    delete top.host;
    writeFileSync(join(repo, 'ramboot.yaml'), stringify(top));
    writeFileSync(join(work, 'token'), 'shared-token-5f2e\n');
    const add = await ramboot(['secrets', 'add', 'etc/shared-token', '--from', join(work, 'token'), '--repo', repo], env);
    expect(add.exitCode, add.stderr).toBe(0);
    expect(existsSync(join(repo, 'secrets/etc/shared-token.age'))).toBe(true);
    const list = await ramboot(['secrets', 'list', '--repo', repo], env);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/etc\/shared-token/);
    commitAll(repo, 'a secret both machines share; host per machine only');
    for (const m of ['nas', 'backup']) {
      const b = await ramboot(['build', '--repo', repo, '--machine', m, '--state', SHARED_STATE, '--images', join(work, 'images'), '--json'], env);
      expect(b.exitCode, b.stderr).toBe(0);
    }
  }, 10 * 60_000);
});
