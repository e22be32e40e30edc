import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../lib/config.js';
import { ConfigError } from '../../lib/errors.js';

// ramboot.yaml: what a user gets by leaving keys out, and what they are told when a key
// is wrong: the file, the line, the key, and what is allowed there.

function error(text: string, file?: string): ConfigError {
  try {
    parseConfig(text, file);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('parseConfig accepted the file');
}

const lineOf = (text: string, needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1;

describe('ramboot.yaml', () => {
  it('needs only a host name; everything else has defaults', () => {
    const c = parseConfig('host:\n  name: nas\n');
    expect(c.host).toEqual({ name: 'nas', port: 22, user: 'root' });
    expect(c.distro).toEqual({ name: 'alpine', allow_untrusted: false, keys: [] });
    expect(c.boot).toEqual({ medium: '/media/usb', firmware: 'bios', kernel: 'vmlinuz*', append: '' });
    expect(c.trial).toEqual({ confirm_timeout: 600_000, reboot_deadline: 600_000, watchdog: false });
    expect(c.health).toEqual({ deadline: 300_000, settle: 20_000, checks: [] });
    expect(c.secrets).toEqual({ recipients: [], host_key: 'etc/ssh/ssh_host_ed25519_key', at_rest: 'medium', files: {} });
    expect(c.skeleton).toEqual({ owners: {} });
    expect(c.build).toEqual({ network: false });
  });

  it('fills in health check and secret file defaults and reads durations and modes', () => {
    const c = parseConfig(`host:
  name: nas
trial:
  confirm_timeout: 90s
  reboot_deadline: 2m
health:
  deadline: 120
  checks:
    - name: web
      http: http://127.0.0.1:8080/
    - name: disk
      cmd: df /
      period: 1500ms
secrets:
  files:
    etc/app/token:
      mode: "0640"
      group: 101
`);
    expect(c.trial.confirm_timeout).toBe(90_000);
    expect(c.trial.reboot_deadline).toBe(120_000);
    expect(c.health.deadline).toBe(120_000);
    expect(c.health.checks[0]).toEqual({ name: 'web', http: 'http://127.0.0.1:8080/', status: 200, period: 5_000, timeout: 10_000, retries: 3 });
    expect(c.health.checks[1]!.period).toBe(1_500);
    expect(c.secrets.files['etc/app/token']).toEqual({ mode: 0o640, owner: 0, group: 101 });
  });

  it('treats an empty file as missing the required host', () => {
    const e = error('');
    expect(e.message).toContain('ramboot.yaml');
    expect(e.message).toContain('key host');
    expect(e.message).toContain('is required');
  });

  it('names the file it was given, the line and the key for an unknown key, and lists the keys allowed there', () => {
    const text = 'host:\n  name: nas\ndistro:\n  name: alpine\n  relase: v3.20\n';
    const e = error(text, 'machines/nas/ramboot.yaml');
    expect(e.file).toBe('machines/nas/ramboot.yaml');
    expect(e.line).toBe(5);
    expect(e.key).toBe('distro.relase');
    expect(e.message).toBe(
      'machines/nas/ramboot.yaml, line 5, key distro.relase: unknown key; allowed here: name, release, mirror, arch, allow_untrusted, keys, minirootfs',
    );
  });

  it('lists the top-level keys for an unknown top-level key', () => {
    const e = error('host:\n  name: nas\ncompile:\n  fast: true\n');
    expect(e.line).toBe(3);
    expect(e.key).toBe('compile');
    expect(e.message).toContain('allowed here: host, distro, boot, trial, health, secrets, skeleton');
  });

  it('lists the choices for a bad enum value', () => {
    const text = 'host:\n  name: nas\ndistro:\n  name: gentoo\n';
    const e = error(text);
    expect(e.message).toBe('ramboot.yaml, line 4, key distro.name: must be one of "alpine", "debian"');
  });

  it('explains what a duration looks like when one is wrong', () => {
    const text = 'host:\n  name: nas\ntrial:\n  confirm_timeout: soon\n';
    const e = error(text);
    expect(e.line).toBe(4);
    expect(e.key).toBe('trial.confirm_timeout');
    expect(e.message).toContain('"soon" is not a duration');
    expect(e.message).toContain('"30s", "5m", "1h"');
  });

  it('explains what a file mode looks like when one is wrong', () => {
    const text = 'host:\n  name: nas\nsecrets:\n  files:\n    etc/app/token:\n      mode: rw-r-----\n';
    const e = error(text);
    expect(e.line).toBe(lineOf(text, 'mode:'));
    expect(e.key).toBe('secrets.files.etc/app/token.mode');
    expect(e.message).toContain('"rw-r-----" is not an octal file mode such as "0600"');
  });

  it('rejects a malformed recipient and says which kinds of keys are accepted', () => {
    const text = 'host:\n  name: nas\nsecrets:\n  recipients:\n    - age1notarealkey\n';
    const e = error(text);
    expect(e.line).toBe(5);
    expect(e.key).toBe('secrets.recipients.0');
    expect(e.message).toContain('age X25519 public key (age1…)');
    expect(e.message).toContain('ssh-ed25519');
  });

  it('rejects a health check that has both cmd and http, saying it needs exactly one', () => {
    const text = 'host:\n  name: nas\nhealth:\n  checks:\n    - name: both\n      cmd: "true"\n      http: http://127.0.0.1/\n';
    const e = error(text);
    expect(e.line).toBe(5);
    expect(e.key).toBe('health.checks.0');
    expect(e.message).toContain('exactly one of "cmd"');
    expect(e.message).toContain('"http"');
  });

  it('points at the line of YAML that does not parse', () => {
    const e = error('host:\n  name: nas\ndistro: [alpine\n');
    expect(e.message).toMatch(/^ramboot\.yaml, line \d+: not valid YAML/);
    expect(e.line).toBeGreaterThanOrEqual(3);
  });

  it('refuses a boot.append with a newline (a line of its own in syslinux.cfg), naming the key', () => {
    const text = 'host:\n  name: nas\nboot:\n  append: "console=ttyS0\\nDEFAULT new"\n';
    const e = error(text);
    expect(e.line).toBe(4);
    expect(e.key).toBe('boot.append');
    expect(e.message).toContain('without newlines or control characters');
    expect(error('host:\n  name: nas\nboot:\n  append: "quiet\\x1b[2J"\n').key).toBe('boot.append');
    expect(parseConfig('host:\n  name: nas\nboot:\n  append: console=ttyS0 quiet ip=dhcp\n').boot.append).toBe('console=ttyS0 quiet ip=dhcp');
  });

  it('refuses a distro.mirror that would read as an option of mmdebstrap, naming the key', () => {
    const text = 'host:\n  name: nas\ndistro:\n  name: debian\n  mirror: --setup-hook=touch /tmp/x\n';
    const e = error(text);
    expect(e.line).toBe(5);
    expect(e.key).toBe('distro.mirror');
    expect(e.message).toContain('not starting with "-"');
    for (const bad of ['-x', 'http://deb.debian.org/debian --foo', 'ftp://mirror/debian', 'mirror\\tdir']) {
      expect(error(`host:\n  name: nas\ndistro:\n  mirror: "${bad}"\n`).key, bad).toBe('distro.mirror');
    }
    for (const good of ['http://deb.debian.org/debian', 'https://dl-cdn.alpinelinux.org/alpine/v3.20', 'file:///srv/debian', '/srv/apk', 'mirror/apk']) {
      expect(parseConfig(`host:\n  name: nas\ndistro:\n  mirror: ${good}\n`).distro.mirror).toBe(good);
    }
  });

  it('refuses a distro.release, distro.arch or minirootfs URL that is not a plain name or location, naming the key', () => {
    expect(error('host:\n  name: nas\ndistro:\n  release: --variant=custom\n').key).toBe('distro.release');
    expect(error('host:\n  name: nas\ndistro:\n  release: bookworm main\n').key).toBe('distro.release');
    expect(error('host:\n  name: nas\ndistro:\n  arch: amd64,i386\n').key).toBe('distro.arch');
    const sha512 = 'a'.repeat(128);
    expect(error(`host:\n  name: nas\ndistro:\n  minirootfs:\n    url: --to-command=sh\n    sha512: ${sha512}\n`).key).toBe('distro.minirootfs.url');
    expect(parseConfig('host:\n  name: nas\ndistro:\n  release: v3.20\n  arch: x86_64\n').distro).toMatchObject({ release: 'v3.20', arch: 'x86_64' });
  });

  it('names the key for a value of the wrong type', () => {
    const e = error('host:\n  name: nas\n  port: twenty-two\n');
    expect(e.line).toBe(3);
    expect(e.key).toBe('host.port');
  });
});
