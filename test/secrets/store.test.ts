import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../lib/config.js';
import { ConfigError } from '../../lib/errors.js';
import { encrypt } from '../../secrets/age.js';
import { CorruptSecretError, MissingSecretError, UnsafeSecretPathError, WrongIdentityError } from '../../secrets/errors.js';
import { readIdentityFile } from '../../secrets/identity.js';
import { generateSshEd25519 } from '../../secrets/ssh-private.js';
import { parseSshPublicLine, sshTag } from '../../secrets/ssh-public.js';
import { decryptForImage, fingerprint, hostKeyPublic, type EncryptedSecret } from '../../secrets/store.js';
import { ageKeygen, sshFingerprintOf, sshKeygen, tempDir } from './helpers.js';

async function setup() {
  const dir = await tempDir();
  const controller = await ageKeygen(dir, 'controller.key');
  const admin = await sshKeygen(dir, 'admin');
  const yaml = `host:
  name: nas
secrets:
  recipients:
    - ${controller.recipient}
    - ${admin.publicLine}
  files:
    etc/app/token:
      mode: "0640"
      owner: app
      group: 101
`;
  const config = parseConfig(yaml, 'ramboot.yaml');
  const identities = await readIdentityFile(controller.file);
  const seal = async (path: string, plaintext: string | Buffer, recipients = [controller.recipient, admin.publicLine]) => ({
    repoPath: `secrets/${path}.age`,
    data: await encrypt(Buffer.from(plaintext), recipients, { armor: true }),
  });
  return { dir, controller, admin, config, identities, seal };
}

describe('the build gets every secret decrypted in memory, with its configured owner and mode', () => {
  it('configured and unconfigured secrets, sorted, defaults 0600 root:root', async () => {
    const { config, identities, seal } = await setup();
    const hostKey = generateSshEd25519('host');
    const files = [await seal('etc/app/token', 'tok\n'), await seal('etc/ssh/ssh_host_ed25519_key', hostKey.privateKey), {
      repoPath: 'secrets/.gitkeep',
      data: new Uint8Array(0),
    }];
    const out = await decryptForImage(files, config, identities);
    expect(out.map((s) => [s.path, s.mode, s.owner, s.group])).toEqual([
      ['etc/app/token', 0o640, 'app', 101],
      ['etc/ssh/ssh_host_ed25519_key', 0o600, 0, 0],
    ]);
    expect(out[0]!.data.toString()).toBe('tok\n');
    expect(Buffer.isBuffer(out[1]!.data)).toBe(true);
  });

  it('hostKeyPublic is the public half of the host key, and fingerprint matches ssh-keygen -lf', async () => {
    const { dir, config, identities, seal } = await setup();
    const key = await sshKeygen(dir, 'host');
    const secrets = await decryptForImage([await seal('etc/ssh/ssh_host_ed25519_key', await readFile(key.file)), await seal('etc/app/token', 't')], config, identities);
    const line = hostKeyPublic(secrets, config)!;
    expect(line).toBe(key.publicLine.split(' ').slice(0, 2).join(' '));
    expect(fingerprint(line)).toBe(await sshFingerprintOf(`${key.file}.pub`));
  });

  it('hostKeyPublic is undefined when the repository has no host key', async () => {
    const { config, identities, seal } = await setup();
    expect(hostKeyPublic(await decryptForImage([await seal('etc/app/token', 't')], config, identities), config)).toBeUndefined();
  });

  it('a host key secret that is not an ssh key is named', async () => {
    const { config, identities, seal } = await setup();
    const secrets = await decryptForImage([await seal('etc/app/token', 't'), await seal('etc/ssh/ssh_host_ed25519_key', 'hunter2')], config, identities);
    expect(() => hostKeyPublic(secrets, config)).toThrow(/secrets\/etc\/ssh\/ssh_host_ed25519_key\.age.*OpenSSH ed25519/);
  });
});

describe('a build with a bad secret fails and says which file and why', () => {
  it('wrong identity: names the file, its recipients, the configured ones and the identity tried', async () => {
    const { dir, config, admin, seal } = await setup();
    const stranger = await ageKeygen(dir, 'stranger.key');
    const file = await seal('etc/app/token', 'x', [admin.publicLine]);
    const err = (await decryptForImage([file], config, await readIdentityFile(stranger.file)).catch((e: unknown) => e)) as WrongIdentityError;
    expect(err).toBeInstanceOf(WrongIdentityError);
    expect(err.message).toContain('secrets/etc/app/token.age');
    expect(err.message).toContain('encrypted to ssh-ed25519 admin@test');
    expect(err.message).toContain('ramboot.yaml lists 1×X25519, ssh-ed25519 admin@test');
    expect(err.message).toContain(`tried ${stranger.recipient} (from ${stranger.file})`);
    expect(err.stanzas).toEqual([{ type: 'ssh-ed25519', tag: sshTag(parseSshPublicLine(admin.publicLine).wire) }]);
  });

  it('an unknown ssh recipient shows its tag', async () => {
    const { dir, config, identities, seal } = await setup();
    const other = await sshKeygen(dir, 'other');
    const file = await seal('etc/app/token', 'x', [other.publicLine]);
    const tag = sshTag(parseSshPublicLine(other.publicLine).wire);
    await expect(decryptForImage([file], config, identities)).rejects.toThrow(`encrypted to ssh-ed25519 [unknown tag ${tag}]`);
  });

  it('truncated file: CorruptSecretError naming it', async () => {
    const { config, identities, seal } = await setup();
    const file = await seal('etc/app/token', 'x'.repeat(500));
    const truncated = { ...file, data: file.data.subarray(0, file.data.length - 60) };
    const err = await decryptForImage([truncated], config, identities).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptSecretError);
    expect((err as Error).message).toMatch(/secrets\/etc\/app\/token\.age: the file is damaged/);
  });

  it('corrupted file: CorruptSecretError naming it', async () => {
    const { config, identities, seal } = await setup();
    const file = await seal('etc/app/token', 'payload');
    // Flip a byte inside the armored payload: the header still names our key, the payload fails.
    const text = Buffer.from(file.data).toString();
    const lines = text.split('\n');
    const i = lines.length - 3;
    lines[i] = (lines[i]![0] === 'A' ? 'B' : 'A') + lines[i]!.slice(1);
    const err = await decryptForImage([{ ...file, data: Buffer.from(lines.join('\n')) }], config, identities).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptSecretError);
    expect((err as CorruptSecretError).file).toBe('secrets/etc/app/token.age');
  });

  const unsafe: [string, RegExp][] = [
    ['secrets/../etc/passwd.age', /"\.\."/],
    ['secrets/etc/../../x.age', /"\.\."/],
    ['secrets//etc/x.age', /absolute path/],
    ['secrets/etc//x.age', /empty or "\." segment/],
    ['secrets/./x.age', /empty or "\." segment/],
    ['secrets/etc/x', /not an \.age file/],
    ['etc/x.age', /live under secrets\//],
    ['/secrets/etc/x.age', /live under secrets\//],
  ];
  for (const [repoPath, why] of unsafe) {
    it(`a path that could escape the image root is refused: ${repoPath}`, async () => {
      const { config, identities } = await setup();
      const err = await decryptForImage([{ repoPath, data: new Uint8Array(0) }], config, identities).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnsafeSecretPathError);
      expect((err as Error).message).toContain(JSON.stringify(repoPath));
      expect((err as Error).message).toMatch(why);
    });
  }

  it('a symlink in secrets/ is refused', async () => {
    const { config, identities } = await setup();
    const file: EncryptedSecret = { repoPath: 'secrets/etc/app/token.age', data: Buffer.from('/etc/shadow'), isSymlink: true };
    await expect(decryptForImage([file], config, identities)).rejects.toThrow(/token\.age.*symlink/);
  });

  it('a secret configured in ramboot.yaml but missing from secrets/ names the file and the config key', async () => {
    const { config, identities } = await setup();
    const err = await decryptForImage([], config, identities).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingSecretError);
    expect((err as Error).message).toContain('secrets/etc/app/token.age');
    expect((err as MissingSecretError).configKey).toBe('secrets.files.etc/app/token');
  });
});

describe('ramboot.yaml recipients are checked where they are written', () => {
  const yaml = (r: string) => `host:\n  name: nas\nsecrets:\n  recipients:\n    - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n    - ${r}\n`;

  for (const [what, r] of [
    ['not a key at all', 'hello'],
    ['an age key with a bad checksum', 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8q'],
    ['an ssh key that is not base64 of an ed25519 key', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNvbWV0aGluZw== me'],
    ['an rsa key', 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ me'],
  ]) {
    it(`${what}: ConfigError with file, line and key`, () => {
      const err = (() => {
        try {
          parseConfig(yaml(r!), '/repo/ramboot.yaml');
        } catch (e) {
          return e;
        }
      })() as ConfigError;
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.file).toBe('/repo/ramboot.yaml');
      expect(err.line).toBe(6);
      expect(err.key).toBe('secrets.recipients.1');
    });
  }

  it('valid keys of both kinds pass', async () => {
    const dir = await tempDir();
    const a = await ageKeygen(dir);
    const b = await sshKeygen(dir);
    expect(parseConfig(yaml(a.recipient).replace(/- age1ql3.*\n/, `- ${b.publicLine}\n`), 'ramboot.yaml').secrets.recipients).toEqual([
      b.publicLine,
      a.recipient,
    ]);
  });
});
