import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alpineConfig, commitAll, localMirror, makeRepo, minimalAlpineFiles, writeFiles } from '../helpers/apk.js';
import { ramboot, SHARED_STATE, tempDir, type CliResult } from '../helpers/ramboot.js';

// Repository code runs sandboxed (issue 19): a setup.sh written as an attacker would
// write it looks for the build host's /etc/shadow through /proc/1/root, a file standing
// in for the controller's identity, the builder's environment, the host's disks, and a
// TCP server on the host's loopback. It prints what it found; each must be nothing. And
// root/ files under var/run (-> /run) land in the image, never on the host's /run.

const tag = randomBytes(6).toString('hex');
/** Stands in for a token in the environment of ramboot's own process. */
const SECRET_VAR = 'RAMBOOT_TEST_SECRET';
process.env[SECRET_VAR] = `ramboot-secret-${tag}`;
// The tests' local apk mirrors live in the shared test state: the operator allows it.
process.env.RAMBOOT_MIRRORS = SHARED_STATE;

/** Capabilities left to setup.sh (numbers from linux/capability.h). */
const KEPT_CAPS = { CHOWN: 0, DAC_OVERRIDE: 1, FOWNER: 3, FSETID: 4, KILL: 5, SETGID: 6, SETUID: 7, NET_BIND_SERVICE: 10, SYS_CHROOT: 18, AUDIT_WRITE: 29, SETFCAP: 31 };
const CAP_EFF = Object.values(KEPT_CAPS)
  .reduce((m, bit) => m | (1n << BigInt(bit)), 0n)
  .toString(16)
  .padStart(16, '0');

/** The device number of the disk the host's / is on, for a setup.sh that makes its own node for it. */
function rootDisk(): { major: number; minor: number } {
  const dev = statSync('/').dev;
  return { major: Math.floor(dev / 256) & 0xfff, minor: (dev & 0xff) | ((dev >> 12) & 0xfff00) };
}

function probeScript(o: { identity: string; port: number }): string {
  const { major, minor } = rootDisk();
  return `#!/bin/sh
# Each probe prints "PROBE name=none" or what it reached of the build host.
report() { echo "PROBE $1=\${2:-none}"; }

found=""
for r in /proc/[0-9]*/root; do
	[ -r "$r/etc/shadow" ] && ! cmp -s "$r/etc/shadow" /etc/shadow && found="$found $r"
done
report shadow "$(echo $found)"

found=""
for p in ${o.identity} /proc/[0-9]*/root${o.identity}; do
	grep -qs identity-${tag} "$p" && found="$found $p"
done
report identity "$(echo $found)"

found=""
for e in /proc/[0-9]*/environ; do
	tr '\\0' '\\n' < "$e" 2>/dev/null | grep -q '^${SECRET_VAR}=' && found="$found $e"
done
env | grep -q '^${SECRET_VAR}=' && found="$found env"
report environ "$(echo $found)"

found=""
for d in /dev/* /dev/*/*; do [ -b "$d" ] && found="$found $d"; done
ls /sys/block 2>/dev/null | grep -q . && found="$found /sys/block"
mknod /tmp/probe-disk b ${major} ${minor} 2>/dev/null && head -c 512 /tmp/probe-disk 2>/dev/null | grep -q . && found="$found mknod"
rm -f /tmp/probe-disk
mkdir -p /tmp/probe-mnt && mount -t tmpfs probe /tmp/probe-mnt 2>/dev/null && found="$found mount" && umount /tmp/probe-mnt
rmdir /tmp/probe-mnt
report disk "$(echo $found)"

report network "$(wget -q -T 5 -O - http://127.0.0.1:${o.port}/ 2>/dev/null)"
report caps "$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)"
report hostname "$(hostname)"
`;
}

/** What setup.sh printed as "PROBE name=value", from the build's log. */
function probes(r: CliResult): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of r.stderr.matchAll(/PROBE (\w+)=([^"\n\\]*)/g)) out[m[1]!] = m[2]!.trim();
  return out;
}

describe('setup.sh in the sandbox', () => {
  let work: string;
  let server: Server;
  let port: number;
  let connections = 0;
  let identity: string;
  let repo: string;
  let build: CliResult;
  const inRun = `ramboot-probe-${tag}`;
  const hostRunDir = `/run/ramboot-keep-${tag}`;

  beforeAll(async () => {
    work = tempDir('sandbox');
    identity = join(work, 'identity.txt');
    writeFileSync(identity, `AGE-SECRET-KEY-identity-${tag}\n`, { mode: 0o600 });
    server = createServer((_req, res) => {
      connections++;
      res.end(`reached-the-host-${tag}`);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
    // A directory of the host's /run that root/var/run/<name> would replace.
    mkdirSync(join(hostRunDir, 'keep'), { recursive: true });
    const files = minimalAlpineFiles(localMirror());
    files['setup.sh'] = [probeScript({ identity, port }), 0o755];
    files[`root/var/run/${inRun}`] = 'written through var/run\n';
    files[`root/var/run/ramboot-keep-${tag}`] = 'replaces a directory of /run only in the image\n';
    repo = makeRepo(files);
    build = await ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images'), '--json']);
  }, 10 * 60_000);

  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    rmSync(hostRunDir, { recursive: true, force: true });
    rmSync(`/run/${inRun}`, { force: true });
    if (work && !readFileSync('/proc/mounts', 'utf8').includes(work)) rmSync(work, { recursive: true, force: true });
  });

  it('builds the repository (the probes are findings, not failures)', () => {
    expect(build.exitCode, build.stderr.slice(-3000)).toBe(0);
    expect(Object.keys(probes(build)).sort()).toEqual(['caps', 'disk', 'environ', 'hostname', 'identity', 'network', 'shadow']);
  });

  it('does not reach the host\'s /etc/shadow through /proc/1/root', () => {
    expect(probes(build).shadow).toBe('none');
  });

  it('does not reach a file of the host standing in for the controller\'s identity', () => {
    expect(probes(build).identity).toBe('none');
  });

  it('does not see the builder\'s environment, neither its own nor through /proc/*/environ', () => {
    expect(probes(build).environ).toBe('none');
  });

  it('sees no block device, cannot make a node for the host\'s disk, and cannot mount', () => {
    expect(probes(build).disk).toBe('none');
  });

  it('cannot open a connection to a server on the host\'s loopback', () => {
    expect(probes(build).network).toBe('none');
    expect(connections).toBe(0);
  });

  it('runs with only the capabilities a package install and setup.sh need, under a host name of its own', () => {
    expect(probes(build).caps).toBe(CAP_EFF);
    expect(probes(build).hostname).toBe('ramboot-build');
  });

  it('writes root/var/run/<name> into the image at /run/<name>, not onto the host\'s /run', () => {
    const built = JSON.parse(build.stdout) as { imageDir: string };
    const manifest = JSON.parse(readFileSync(join(built.imageDir, 'manifest.json'), 'utf8')) as { files: { path: string }[] };
    const paths = manifest.files.map((f) => f.path);
    expect(paths).toContain(`run/${inRun}`);
    expect(paths).toContain(`run/ramboot-keep-${tag}`);
    expect(existsSync(`/run/${inRun}`)).toBe(false);
    expect(readdirSync(hostRunDir)).toEqual(['keep']);
  });

  it('gives setup.sh the network when ramboot.yaml says build.network: true', async () => {
    writeFiles(repo, { 'ramboot.yaml': alpineConfig(localMirror(), 'build:\n  network: true\n') });
    commitAll(repo, 'setup.sh may use the network');
    const r = await ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images-net'), '--json']);
    expect(r.exitCode, r.stderr.slice(-3000)).toBe(0);
    expect(probes(r).network).toBe(`reached-the-host-${tag}`);
    // Only the network: the host's processes and files stay out of reach.
    expect(probes(r).shadow).toBe('none');
    expect(probes(r).environ).toBe('none');
  }, 10 * 60_000);

  it('refuses a mount point of the sandbox that root/ made a symlink to the host, naming it', async () => {
    const target = join(work, 'dev-target');
    mkdirSync(target);
    const repo = makeRepo(minimalAlpineFiles(localMirror()));
    symlinkSync(target, join(repo, 'root/dev'));
    commitAll(repo, 'root/dev is a link to a directory of the host');
    const r = await ramboot(['build', '--repo', repo, '--state', SHARED_STATE, '--images', join(work, 'images-dev')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('failed to run setup.sh: /dev in the new root is a symlink, and the sandbox mounts /dev there');
    expect(readdirSync(target)).toEqual([]);
  }, 10 * 60_000);

  it('refuses a symlink that leads above the image\'s / when the builder writes through it, naming the file', async () => {
    const target = join(work, 'escape');
    mkdirSync(target);
    const up = '../'.repeat(40);
    const files = minimalAlpineFiles(localMirror());
    files['setup.sh'] = [`#!/bin/sh\nset -e\nrm -rf /etc/init.d\nln -s ${up}${target.slice(1)} /etc/init.d\n`, 0o755];
    const r = await ramboot(['build', '--repo', makeRepo(files), '--state', SHARED_STATE, '--images', join(work, 'images-escape')]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('failed to write etc/init.d/ramboot-trial: a symlink along its path leads above the image\'s /');
    expect(readdirSync(target)).toEqual([]);
  }, 10 * 60_000);
});
