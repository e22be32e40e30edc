import { createHash } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal } from '../../deploy/journal.js';
import { keyedAlpineRepo } from '../helpers/apk.js';
import { ramboot, tempDir } from '../helpers/ramboot.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

// `ramboot publish` and `ramboot deploy --registry` through the real CLI, with a real
// registry (docker-registry on loopback) and the minimal Alpine repository built offline
// from the test mirror. The machine is a local sshd standing in for the NAS: the deploy
// stops at its host key (it is not the image's), after the journal recorded the plan.

let sshd: TestSshd;
let registry: TestRegistry;
let repo: string;
let env: Record<string, string>;

beforeAll(async () => {
  sshd = await startSshd();
  registry = await startRegistry();
  ({ repo, env } = await keyedAlpineRepo());
}, 10 * 60_000);

afterAll(async () => {
  await sshd?.stop();
  await registry?.stop();
});

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('publishing to an OCI registry and deploying from it (stand-in NAS: a local sshd)', () => {
  it('publish builds HEAD and pushes it; a site controller with --registry and no repository pulls it, verified, and deploys it', async () => {
    const ref = `${registry.host}/nas/frood:main`;
    const state = tempDir('publish-state');
    const pub = await ramboot(['publish', '--repo', repo, '--state', state, '--registry', ref], env);
    expect(pub.exitCode, pub.stderr).toBe(0);
    const [, buildId] = new RegExp(`^published build (\\S+) to ${ref.replace(/[.]/g, '\\.')}@sha256:[0-9a-f]{64} \\((\\d+) blob\\(s\\), .* sent; secrets sealed to 1 recipient\\(s\\)\\)$`).exec(pub.stdout.trim()) ?? [];
    expect(buildId, pub.stdout).toBeDefined();

    const site = tempDir('publish-site');
    const reach = ['--address', '127.0.0.1', '--port', String(sshd.port), '--ssh-key', sshd.clientKey];
    const d = await ramboot(['deploy', '--registry', ref, '--state', site, ...reach], env);
    expect(d.exitCode, `${d.stdout}\n${d.stderr}`).toBe(11);
    expect(d.stdout).toMatch(/host key mismatch/);
    expect(d.stderr).toMatch(new RegExp(`pulled build ${buildId} from .*: \\d+ blob\\(s\\)`));
    const plan = (await Journal.open(site)).deploys().at(-1)!.plan!;
    expect(plan.imageDir).toBe(join(site, 'images', buildId!));
    const built = join(state, 'images', buildId!);
    const manifest = JSON.parse(readFileSync(join(built, 'manifest.json'), 'utf8'));
    for (const f of [manifest.kernel, ...manifest.segments]) expect(sha256(join(plan.imageDir, f.file))).toBe(f.sha256);

    // Again: the site has every file, and fetches only the manifest and its config.
    const again = await ramboot(['deploy', '--registry', ref, '--state', site, ...reach], env);
    expect(again.exitCode).toBe(11);
    expect(again.stderr).toMatch(new RegExp(`pulled build ${buildId} from .*: 1 blob\\(s\\), `));
  }, 10 * 60_000);

  it('a registry that wants a login: --registry-login FILE (refused while others can read it), or the environment', async () => {
    const login = { username: 'ci-bot', password: 'tok-77e1' };
    const guarded = await startRegistry({ kind: 'token', ...login });
    try {
      const ref = `${guarded.host}/nas/frood:main`;
      const file = join(tempDir('registry-login'), 'login');
      writeFileSync(file, `${login.username}:${login.password}\n`, { mode: 0o644 });
      const open = await ramboot(['publish', '--repo', repo, '--registry', ref, '--registry-login', file], env);
      expect(open.exitCode).toBe(1);
      expect(open.stderr).toMatch(/it is open to other users \(mode 0644\); make it private with `chmod 600/);
      chmodSync(file, 0o600);
      const pub = await ramboot(['publish', '--repo', repo, '--registry', ref, '--registry-login', file], env);
      expect(pub.exitCode, pub.stderr).toBe(0);
      const site = tempDir('publish-login-site');
      const reach = ['--address', '127.0.0.1', '--port', String(sshd.port), '--ssh-key', sshd.clientKey];
      const d = await ramboot(['deploy', '--registry', ref, '--state', site, ...reach], { ...env, RAMBOOT_REGISTRY_USERNAME: login.username, RAMBOOT_REGISTRY_PASSWORD: login.password });
      expect(d.exitCode, d.stderr).toBe(11);
      expect(d.stderr).toMatch(/pulled build \S+ from /);
      expect(`${pub.stdout}${pub.stderr}${d.stdout}${d.stderr}`).not.toContain(login.password);
    } finally {
      await guarded.stop();
    }
  }, 10 * 60_000);

  it('publish without --registry, or deploy with both --image and --registry, is a usage error (exit 64) that names the option', async () => {
    const p = await ramboot(['publish', '--repo', repo], env);
    expect(p.exitCode).toBe(64);
    expect(p.stderr).toMatch(/needs --registry HOST\[:PORT\]\/NAME\[:TAG\]/);
    const d = await ramboot(['deploy', '--image', '/nonexistent', '--registry', `${registry.host}/nas/frood`], env);
    expect(d.exitCode).toBe(64);
    expect(d.stderr).toMatch(/--image and --registry name two images; give one/);
  });
});
