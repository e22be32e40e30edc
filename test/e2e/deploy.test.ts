import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../deploy/ssh.js';
import type { Built } from '../helpers/ramboot.js';
import { MEDIUM, startNas, strangerKey, type VirtualNas } from '../helpers/nas.js';

// `ramboot deploy` on the virtual NAS with the Debian example: the protocol of
// docs/ARCHITECTURE.md ("Deploy") against a real kernel, syslinux, extlinux --once and
// reboots. One machine, booted once from a formatted stick, then deployed to again and
// again; each `it` leaves it running a known build from `lts` for the next one.

const MINUTES = 60_000;
const FSTAB = 'root/etc/fstab';

describe('deploying to the virtual NAS (Debian example)', () => {
  let nas: VirtualNas;
  let current: Built;
  let fstab: string;

  /** The medium's file of a segment of a build, by the segment's name. */
  const segmentFile = (b: Built, name: string) => `boot/ramboot/${b.segments.find((s) => s.name === name)!.sha256}.cpio.zst`;
  const hash = async (path: string) => (await nas.sh(`sha256sum ${MEDIUM}/${path}`)).split(' ')[0];
  /** Puts a build's segment back on the medium if it is not whole there (what a failed test may leave). */
  const restore = async (b: Built, name: string) => {
    const seg = b.segments.find((s) => s.name === name)!;
    if ((await hash(segmentFile(b, name))) === seg.sha256) return;
    const s = await nas.session();
    try {
      await s.upload(join(b.imageDir, seg.file), `${MEDIUM}/${segmentFile(b, name)}`);
    } finally {
      s.close();
    }
  };
  /** The last label record of the journal: what the last deploy that got that far sent. */
  const lastLabel = () =>
    readFileSync(join(nas.stateDir, 'deploy.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.step === 'label').at(-1);
  /** Every boot file of a build: kernel, microcode and segments. */
  const imageBytes = (b: Built) => {
    const m = JSON.parse(readFileSync(join(b.imageDir, 'manifest.json'), 'utf8'));
    return m.kernel.bytes + (m.ucode?.bytes ?? 0) + m.segments.reduce((n: number, s: { bytes: number }) => n + s.bytes, 0);
  };

  beforeAll(async () => {
    nas = await startNas('deploy e2e');
    current = nas.first;
    fstab = readFileSync(join(nas.repo, FSTAB), 'utf8');
  }, 20 * MINUTES);

  afterAll(async () => {
    await nas?.stop();
  });

  it('6: refuses a machine presenting a different host key before writing anything', async () => {
    const before = await nas.listing();
    // The image says which key the machine must present; this one says a key no machine has.
    const forged = join(nas.work, 'forged');
    cpSync(nas.first.imageDir, forged, { recursive: true });
    const m = JSON.parse(readFileSync(join(forged, 'manifest.json'), 'utf8'));
    m.hostKey = strangerKey();
    m.buildId = `${m.buildId}-forged`;
    writeFileSync(join(forged, 'manifest.json'), JSON.stringify(m));
    const r = await nas.deploy(forged, ['--host-key', strangerKey()]);
    expect(r.code).toBe(11);
    expect(`${r.stdout}${r.stderr}`).toMatch(/host key mismatch/);
    expect(await nas.listing()).toBe(before);
    expect(await nas.running()).toMatchObject({ slot: 'lts', build: nas.first.buildId });
  }, 5 * MINUTES);

  it('refuses an image whose fstab would let others read its secrets, naming the line; nothing changes', async () => {
    const before = await nas.listing();
    const exposed = await nas.change({ [FSTAB]: fstab.replace(/^(UUID=.*)fmask=0177,dmask=0077/m, '$1fmask=0133,dmask=0022') }, 'an fstab that exposes the secrets');
    const r = await nas.deploy(exposed.imageDir);
    expect(r.code).toBe(11);
    expect(r.stdout).toMatch(/refusing an image whose secrets others could read on the machine: image \S+'s fstab line "UUID=52A0-0B07 .*fmask=0133,dmask=0022.*" fmask=0133 lets others read its files/);
    expect(await nas.listing()).toBe(before);
    await nas.change({ [FSTAB]: fstab }, 'the fstab keeps the secrets private again');
  }, 10 * MINUTES);

  it('1, 7: repairs the damaged base from the controller\'s copy, promotes a root/-only change sending only what changed, while a second deploy at once is refused; a plain reboot keeps it', async () => {
    // 16 bytes of the base segment on the stick, the file lts and the candidate share, go bad.
    const start = current;
    const base = segmentFile(start, 'base');
    await nas.damage(base);
    try {
      expect(await hash(base)).not.toBe(start.segments.find((s) => s.name === 'base')!.sha256);
      const b = await nas.change({ 'root/etc/deploy-test': 'healthy change\n' }, 'a healthy root/ change');
      const [first, second] = await Promise.all([nas.deployProcess(b.imageDir), new Promise((r) => setTimeout(r, 1500)).then(() => nas.deployProcess(b.imageDir))]);
      const [won, lost] = first.code === 0 ? [first, second] : [second, first];
      expect(won.code, `${won.stdout}\n${won.stderr}`).toBe(0);
      // What runs from here on, for the tests after this one even if a check below fails.
      current = b;
      expect(lost.code).toBe(1);
      expect(lost.stderr).toMatch(/failed to start a deploy to nas: process \d+ is deploying to it \(lock .*deploy\.lock\)/);
      expect(won.stdout).toMatch(/^promoted: build \S+ is the default; build \S+ is kept as old; the medium was damaged: repaired boot\/ramboot\/[0-9a-f]{64}\.cpio\.zst before the label was written/);
      expect(await hash(base)).toBe(b.segments.find((s) => s.name === 'base')!.sha256);
      // What was sent: exactly the segments that differ from what the stick had.
      const changed = b.segments.filter((s) => !start.segments.some((p) => p.sha256 === s.sha256));
      expect(changed.map((s) => s.name)).toEqual(['overlay']);
      const label = lastLabel();
      // The overlay is made on the machine from the one lts has: a few pieces of it are sent.
      nas.log(`a root/-only change sent ${label.bytesSent} bytes of an image of ${imageBytes(b)} (overlay ${changed[0]!.bytes})`);
      expect(label.bytesSent).toBeGreaterThan(0);
      expect(label.bytesSent).toBeLessThan(changed[0]!.bytes);
      expect(label.bytesSent).toBeLessThanOrEqual(imageBytes(b) * 0.02);
      expect(label.repaired).toEqual([base]);
      const table = await nas.slots();
      expect(table.lts?.buildId).toBe(b.buildId);
      expect(table.old?.buildId).toBe(start.buildId);
      expect(table.new).toBeUndefined();
      // The plain reboot: lts is the new build now, and it boots from the repaired base.
      const back = await nas.reboot();
      expect(back).toMatchObject({ slot: 'lts', build: b.buildId, cmdlineBuild: b.buildId });
    } finally {
      // The tests after this one boot lts: its base is whole again, whatever failed here.
      await restore(start, 'base');
    }
  }, 20 * MINUTES);

  it('22: a package added, then removed: each promoted, sending at most 2% of the image; `ramboot deploy` killed while the machine makes the new base from the old one, the next run finishes it', async () => {
    const packages = readFileSync(join(nas.repo, 'packages'), 'utf8');
    const added = await nas.change({ packages: `${packages}less\n` }, 'add the less package');
    // A new base (the package stage may come from the cache of an earlier run, the segment is still new).
    expect(segmentFile(added, 'base')).not.toBe(segmentFile(current, 'base'));
    const killed = await nas.deployProcess(added.imageDir, /^deploy: making boot\/ramboot\/[0-9a-f]{64}\.cpio\.zst on nas from boot\/ramboot\/[0-9a-f]{64}\.cpio\.zst and \d+ bytes sent/m);
    expect(killed.killed, `${killed.stdout}\n${killed.stderr}`).toBe(true);
    const literal = Number(/and (\d+) bytes sent/.exec(killed.stderr)![1]);
    const r = await nas.deploy(added.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/^promoted: /);
    // What runs from here on, for the tests after this one even if a figure below is off.
    current = added;
    const resumed = lastLabel().bytesSent;
    nas.log(`adding less: the killed run sent a delta of ${literal} bytes, the next ${resumed}, of an image of ${imageBytes(added)}`);
    expect(literal + resumed).toBeLessThanOrEqual(imageBytes(added) * 0.02);
    expect((await nas.slots()).lts?.buildId).toBe(added.buildId);
    expect(await hash(segmentFile(added, 'base'))).toBe(added.segments.find((s) => s.name === 'base')!.sha256);
    expect(await nas.sh(`ls ${MEDIUM}/boot/ramboot`)).not.toMatch(/\.(part|lit)\b/);
    expect(await nas.sh('command -v less')).toMatch(/less/);

    const removed = await nas.change({ packages }, 'remove the less package again');
    const back = await nas.deploy(removed.imageDir);
    expect(back.code, `${back.stdout}\n${back.stderr}`).toBe(0);
    current = removed;
    nas.log(`removing less sent ${lastLabel().bytesSent} bytes of an image of ${imageBytes(removed)}`);
    expect(lastLabel().bytesSent).toBeLessThanOrEqual(imageBytes(removed) * 0.02);
    expect((await nas.slots()).lts?.buildId).toBe(removed.buildId);
    expect(await nas.sh('command -v less || echo none')).toMatch(/none/);
  }, 30 * MINUTES);

  it('deploying the build that already runs changes nothing and says so', async () => {
    const before = await nas.listing();
    const r = await nas.deploy(current.imageDir);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^promoted: build ${current.buildId} already is the default and running`));
    expect(await nas.listing()).toBe(before);
  }, 5 * MINUTES);

  it('deploy without --image of a commit whose build fails: the build-failed verdict, exit 10, nothing contacted', async () => {
    const before = await nas.listing();
    const setup = readFileSync(join(nas.repo, 'setup.sh'), 'utf8');
    await nas.change({ 'setup.sh': [`${setup}\necho "setup.sh gives up" >&2\nexit 3\n`, 0o755] }, 'a setup.sh that fails').catch(() => undefined);
    const r = await nas.cli(['deploy', '--repo', nas.repo, ...nas.reach()]);
    expect(r.code).toBe(10);
    expect(r.stdout).toMatch(/^build failed: failed to run setup.sh: it exited with 3; its last lines:/);
    expect(r.stdout).toContain('setup.sh gives up');
    expect(await nas.listing()).toBe(before);
    await nas.change({ 'setup.sh': [setup, 0o755] }, 'setup.sh works again');
  }, 10 * MINUTES);

  it('stops before any label changes, with "medium damaged", when a damaged file has no copy on the controller; scrub --repair heals it once a copy is back', async () => {
    const overlay = segmentFile(current, 'overlay');
    await nas.damage(overlay);
    try {
      const cfgBefore = await nas.sh(`cat ${MEDIUM}/boot/syslinux/syslinux.cfg`);
      const listingBefore = await nas.listing();
      // The candidate does not share lts's overlay, and the controller's images directory
      // (--state) holds no image of lts: there is no copy of the damaged file to repair from.
      expect(existsSync(join(nas.stateDir, 'images', current.buildId))).toBe(false);
      const c = await nas.change({ 'root/etc/deploy-test': 'a change for a damaged medium\n' }, 'a change while the medium is damaged');
      const r = await nas.deploy(c.imageDir);
      expect(r.code).toBe(14);
      expect(r.stdout).toMatch(new RegExp(`^medium damaged \\(no label changed\\): the boot medium /media/usb on nas is damaged and this controller has no copy to repair it from: ${overlay.replace(/\./g, '\\.')} \\(named by lts`));
      expect(await nas.sh(`cat ${MEDIUM}/boot/syslinux/syslinux.cfg`)).toBe(cfgBefore);
      // Only the candidate's new files were added (unlabelled, removed by the next deploy); nothing named changed.
      // (A part or literal an earlier failed test left is unnamed too, and goes.)
      const unchanged = (l: string) => l.split('\n').filter((x) => !x.includes(c.segments.find((s) => s.name === 'overlay')!.sha256) && !/\.(part|lit)$/.test(x));
      expect(unchanged(await nas.listing())).toEqual(unchanged(listingBefore));
      // No copy yet: scrub --repair cannot heal it, and says so with exit 14.
      const stuck = await nas.cli(['scrub', '--repo', nas.repo, '--repair', ...nas.reach()]);
      expect(stuck.code, stuck.stderr).toBe(14);
      expect(stuck.stdout).toMatch(/1 damaged file\(s\) have no copy on this controller: rewrite the medium/);
      // A copy in the controller's images: scrub finds the damage by label and repairs it.
      mkdirSync(join(nas.stateDir, 'images'), { recursive: true });
      cpSync(current.imageDir, join(nas.stateDir, 'images', current.buildId), { recursive: true });
      const found = await nas.cli(['scrub', '--repo', nas.repo, ...nas.reach()]);
      expect(found.code).toBe(1);
      expect(found.stdout).toMatch(new RegExp(`lts  build ${current.buildId}: ${overlay.replace(/\./g, '\\.')} DAMAGED`));
      const fixed = await nas.cli(['scrub', '--repo', nas.repo, '--repair', ...nas.reach()]);
      expect(fixed.code).toBe(0);
      expect(fixed.stdout).toMatch(new RegExp(`lts  build ${current.buildId}: ${overlay.replace(/\./g, '\\.')} REPAIRED`));
      expect(await hash(overlay)).toBe(current.segments.find((s) => s.name === 'overlay')!.sha256);
    } finally {
      // The tests after this one boot lts: its overlay is whole again, whatever failed here.
      await restore(current, 'overlay');
    }
  }, 10 * MINUTES);

  it('2: rolls back a change whose health check fails: the trial boots the new build, the machine comes back on lts, and stays there', async () => {
    const good = current;
    nas.settings({ checks: [{ name: 'marker present', cmd: 'ls /nonexistent-marker', retries: 1, period: '5s' }] });
    try {
      const b = await nas.change({ 'root/etc/deploy-test': 'unhealthy change\n' }, 'a change whose health check fails');
      const bootsBefore = nas.boots().length;
      const r = await nas.deploy(b.imageDir);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(12);
      expect(r.stdout).toMatch(/trial not healthy/);
      expect(r.stdout).toContain('marker present');
      expect(r.stdout).toMatch(/nonexistent-marker/);
      // The boots the console saw: the trial of the new build, then lts with the good one.
      expect(nas.boots().slice(bootsBefore)).toEqual([`new ${b.buildId}`, `lts ${good.buildId}`]);
      expect(await nas.running()).toMatchObject({ slot: 'lts', build: good.buildId });
      expect((await nas.slots()).new).toBeUndefined();
      // And once more: the default is the good build.
      expect(await nas.reboot()).toMatchObject({ slot: 'lts', build: good.buildId });
    } finally {
      // The tests after this one start from the default settings, whatever happened here.
      nas.settings();
    }
  }, 25 * MINUTES);

  it('a host key rotated with `secrets rotate`: the deploy connects with the old key, and afterwards the machine presents and ramboot pins the new one', async () => {
    const oldKey = nas.hostKey;
    const rotate = await nas.cli(['secrets', 'rotate', 'etc/ssh/ssh_host_ed25519_key', '--repo', nas.repo]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const b = await nas.change({}, 'a new host key');
    const newKey = JSON.parse(readFileSync(join(b.imageDir, 'manifest.json'), 'utf8')).hostKey;
    expect(newKey).not.toBe(oldKey);
    const r = await nas.deploy(b.imageDir);
    // Whatever is asserted below, the machine presents the key of the build it runs: the later tests pin that one.
    if (r.code === 0) {
      nas.pin(newKey);
      current = b;
    }
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    // The machine now presents the new key, which the journal pins for what comes next…
    const s = await connect({ name: 'nas', address: '127.0.0.1', port: nas.sshPort, user: 'root', identityFile: join(nas.env.HOME!, '.config/ramboot/id_ed25519'), hostKey: newKey });
    expect((await s.exec('cat /etc/ramboot-release')).stdout).toContain(`build=${b.buildId}`);
    s.close();
    const status = await nas.cli(['status', '--repo', nas.repo, ...nas.reach()]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(`build ${b.buildId}`);
    // …and the old one is refused.
    const old = await connect({ name: 'nas', address: '127.0.0.1', port: s.target.port, user: 'root', identityFile: s.target.identityFile, hostKey: oldKey }).catch((e: unknown) => e);
    expect(String(old)).toMatch(/host key mismatch/);
  }, 15 * MINUTES);

  it('a `new` slot that runs another build than its label names is rolled back as not healthy', async () => {
    const good = current;
    const b = await nas.change({ 'root/etc/deploy-test': 'the real build\n' }, 'a build whose label will lie');
    // The label will name another build id than the image's /etc/ramboot-release says.
    const forged = join(nas.work, 'wrong-build');
    cpSync(b.imageDir, forged, { recursive: true });
    const m = JSON.parse(readFileSync(join(forged, 'manifest.json'), 'utf8'));
    m.buildId = `${b.buildId.slice(0, 9)}00000000`;
    writeFileSync(join(forged, 'manifest.json'), JSON.stringify(m));
    const r = await nas.deploy(forged);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(12);
    expect(r.stdout).toMatch(new RegExp(`slot new runs build ${b.buildId} \\(kernel command line: ${m.buildId}\\), expected ${m.buildId}`));
    expect(await nas.running()).toMatchObject({ slot: 'lts', build: good.buildId });
  }, 20 * MINUTES);

  it('the agent reboots a trial whose health checks outlast its confirm timeout: rolled back, and the default boots', async () => {
    const good = current;
    // The window leaves a slow machine (two TCG guests on two cores) time to boot and start
    // the checks; the checks (10 × 20 s) outlast it, and the health deadline outlasts both.
    nas.settings({ confirm: '150s', deadline: '6m', checks: [{ name: 'slow check', cmd: 'sleep 20; false', timeout: '30s', retries: 10, period: '1s' }] });
    try {
      const b = await nas.change({ 'root/etc/deploy-test': 'checks slower than the agent\n' }, 'health checks that outlast the trial');
      const r = await nas.deploy(b.imageDir);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(13);
      expect(r.stdout).toMatch(/trial unreachable \(rolled back\): the machine left the trial boot during the health checks/);
      expect(await nas.running()).toMatchObject({ slot: 'lts', build: good.buildId });
    } finally {
      nas.settings();
    }
  }, 20 * MINUTES);

  it('3: a trial whose network never comes up is rebooted into lts by the agent; the verdict says unreachable', async () => {
    const good = current;
    nas.settings({ confirm: '90s' });
    try {
      const b = await nas.change(
        { 'root/etc/network/interfaces': 'auto lo\niface lo inet loopback\n\n# broken: no such interface\nauto eth9\niface eth9 inet static\n\taddress 10.0.9.15/24\n' },
        'a change that breaks the network',
      );
      const bootsBefore = nas.boots().length;
      const r = await nas.deploy(b.imageDir);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(13);
      expect(r.stdout).toMatch(/trial unreachable \(rolled back\)/);
      expect(await nas.running()).toMatchObject({ slot: 'lts', build: good.buildId });
      expect((await nas.slots()).lts?.buildId).toBe(good.buildId);
      // The controller never reached the trial, so only the agent can have rebooted it.
      expect(nas.boots().slice(bootsBefore)).toEqual([`new ${b.buildId}`, `lts ${good.buildId}`]);
      expect(existsSync(join(nas.stateDir, 'deploy.lock'))).toBe(false);
    } finally {
      nas.settings();
    }
  }, 25 * MINUTES);
});
