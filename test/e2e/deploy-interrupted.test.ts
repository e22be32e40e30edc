import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployEvent } from '../../deploy/deploy.js';
import type { Built } from '../helpers/ramboot.js';
import { MEDIUM, startNas, type VirtualNas } from '../helpers/nas.js';
import { TRIAL_WATCHDOG, hangingInit } from '../helpers/trials.js';

// Deploys that go wrong on the way, on the virtual NAS with the Debian example: bad
// input that must change nothing (the preflight of docs/ARCHITECTURE.md, "Deploy"), a network cable pulled in the
// middle of an upload, and a controller killed with SIGKILL at each stage of the
// protocol. Each `it` leaves the machine running a known build from `lts`.

/** A root/ file of random bytes: an overlay segment big enough to cut in the middle of its upload. */
const BLOB = 'root/var/lib/deploy-test.blob';
const BLOB_BYTES = 24 * 1024 * 1024;

describe('interrupted and refused deploys on the virtual NAS (Debian example)', () => {
  let nas: VirtualNas;
  let current: Built;
  let candidate: Built;

  beforeAll(async () => {
    nas = await startNas('deploy interrupted');
    current = nas.first;
    candidate = await nas.change({ 'root/etc/deploy-test': 'refused change\n' }, 'a change the bad-input cases try to deploy');
  }, 20 * 60_000);

  afterAll(async () => {
    await nas?.stop();
  });

  /** Deploys the candidate under `broken` (set up, then undone), and checks nothing on the machine changed. */
  async function refused(broken: { setUp: string; undo: string }, expected: RegExp, extra: string[] = []) {
    const before = await nas.listing();
    const slots = await nas.slots();
    await nas.sh(broken.setUp);
    let r;
    try {
      r = await nas.deploy(candidate.imageDir, extra);
    } finally {
      await nas.sh(broken.undo);
    }
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(11);
    expect(r.stdout).toMatch(/^upload failed \(nothing changed on the machine\): /);
    expect(r.stdout).toMatch(expected);
    expect(await nas.listing()).toBe(before);
    expect(await nas.slots()).toEqual(slots);
    const running = await nas.running();
    expect(running.slot).toBe('lts');
    expect(running.build).toBe(current.buildId);
  }

  it('8: a medium that is not mounted: a clear error, nothing changed', async () => {
    await refused({ setUp: `umount ${MEDIUM}`, undo: `mount ${MEDIUM}` }, /nothing is mounted at \/media\/usb/);
  }, 5 * 60_000);

  it('8: a medium mounted read-only: a clear error, nothing changed', async () => {
    await refused({ setUp: `mount -o remount,ro ${MEDIUM}`, undo: `mount -o remount,rw ${MEDIUM}` }, /mounted read-only at \/media\/usb/);
  }, 5 * 60_000);

  it('8: not enough free space: a clear error before anything is written', async () => {
    // Clusters holding all but 3 MiB of the free space (fallocate -n on an existing file: FAT allocates without writing zeros);
    // the candidate needs its overlay and secrets plus a 4 MiB margin.
    const fill = `avail=$(df -P -k ${MEDIUM} | awk 'NR==2 {print $4}') && : > ${MEDIUM}/filler && fallocate -n -l $(( (avail - 3072) * 1024 )) ${MEDIUM}/filler`;
    await refused({ setUp: fill, undo: `rm -f ${MEDIUM}/filler` }, /not enough free space: [\d.]+ MiB needed \([\d.]+ MiB to upload \+ 4.0 MiB margin\), [\d.]+ MiB available/);
  }, 5 * 60_000);

  it('8: extlinux missing on the machine: a clear error, nothing changed', async () => {
    await refused({ setUp: 'command -v extlinux > /root/extlinux.path && mv "$(cat /root/extlinux.path)" /root/extlinux.away', undo: 'mv /root/extlinux.away "$(cat /root/extlinux.path)"' }, /extlinux is not installed on the machine/);
  }, 5 * 60_000);

  it('8: a host name that does not resolve: a clear error naming it, nothing changed', async () => {
    await refused({ setUp: 'true', undo: 'true' }, /unknown host no-such-nas\.invalid/, ['--address', 'no-such-nas.invalid']);
  }, 5 * 60_000);

  it('8: an image configured for UEFI on this BIOS machine: a clear error before anything is written', async () => {
    const before = await nas.listing();
    nas.settings({ firmware: 'uefi' });
    const uefi = await nas.change({}, 'configured for UEFI');
    nas.settings();
    const r = await nas.deploy(uefi.imageDir);
    expect(r.code).toBe(11);
    expect(r.stdout).toMatch(/ramboot.yaml says boot.firmware: uefi, but nas booted with BIOS \(no \/sys\/firmware\/efi\): set boot.firmware: bios in ramboot.yaml/);
    expect(await nas.listing()).toBe(before);
  }, 10 * 60_000);

  it('8: a host the image does not describe: a command-line error naming both', async () => {
    const r = await nas.deploy(candidate.imageDir, ['--host', 'frood']);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/--host frood: this repository \(or image\) describes nas/);
  }, 5 * 60_000);

  let big: Built;

  it('power lost during the upload: the default entry boots the complete image, nothing is labelled', async () => {
    const slots = await nas.slots();
    const { bootId } = await nas.running();
    big = await nas.change({ [BLOB]: randomBytes(BLOB_BYTES) }, 'a change with a big file');
    let cycled: Promise<unknown> | undefined;
    const r = await nas.deployWatching(big.imageDir, (e) => {
      if (e.kind === 'upload' && !cycled && e.sent > e.total / 4) cycled = nas.vm.powerCycle();
    });
    await cycled;
    expect(cycled).toBeDefined();
    // The verdict says what happened, and where: nothing was labelled, so nothing changed.
    expect(r.outcome).toMatchObject({ verdict: 'upload-failed', message: expect.stringMatching(/^failed to .* on nas: the connection was lost before it finished/) });
    const back = await nas.waitForBoot(bootId);
    expect(back).toMatchObject({ slot: 'lts', build: current.buildId, cmdlineBuild: current.buildId });
    expect(await nas.slots()).toEqual(slots);
    // What the power cut left of the upload may end in garbage (FAT after a reset); the next test starts clean.
    await nas.sh(`rm -f ${MEDIUM}/boot/ramboot/*.part && sync`);
  }, 20 * 60_000);

  it('4: an upload cut in the middle leaves lts untouched; the next run sends only what is missing and completes', async () => {
    const before = withoutParts(await nas.listing());
    const slots = await nas.slots();
    const b = big;
    let planned = 0;
    let cut: Promise<void> | undefined;
    const onEvent = (e: DeployEvent) => {
      if (e.kind !== 'upload') return;
      planned = e.total;
      // The cable is pulled a third of the way in; bytes already in flight still arrive.
      if (!cut && e.sent > e.total / 3) cut = nas.vm.setLink(false);
    };
    const first = await nas.deployWatching(b.imageDir, onEvent);
    await cut;
    await nas.vm.setLink(true);
    expect(cut).toBeDefined();
    expect(first.outcome.verdict).toBe('upload-failed');
    expect(first.exitCode).toBe(11);
    // The cut connection's writer on the machine finishes once the link is back.
    const part = await settledPart();
    expect(part.bytes).toBeGreaterThan(0);
    expect(part.bytes).toBeLessThan(planned);
    // lts is untouched: the same labels, the same files (the part file aside).
    expect(await nas.slots()).toEqual(slots);
    expect(withoutParts(await nas.listing())).toBe(before);
    expect((await nas.running()).build).toBe(current.buildId);

    const again = await nas.deployWatching(b.imageDir, () => {});
    expect(again.outcome.verdict, again.outcome.message).toBe('promoted');
    nas.log(`first run planned ${planned} bytes and was cut with ${part.bytes} on the medium; the second sent ${again.bytesSent}`);
    expect(again.bytesSent).toBe(planned - part.bytes);
    expect((await nas.slots()).lts?.buildId).toBe(b.buildId);
    expect(await nas.sh(`ls ${MEDIUM}/boot/ramboot`)).not.toMatch(/\.part/);
    current = b;
  }, 20 * 60_000);

  /** Waits until no process writes the part file on the medium any more, and returns its size. */
  async function settledPart(): Promise<{ name: string; bytes: number }> {
    const deadline = Date.now() + 3 * 60_000;
    let last = '';
    while (Date.now() < deadline) {
      const out = await nas.sh(`cd ${MEDIUM}/boot/ramboot && ls -ln *.part; for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null; done | grep -c '\\.part' || true`);
      const lines = out.trim().split('\n');
      const writers = Number(lines.at(-1));
      const f = lines[0]!.trim().split(/\s+/);
      if (writers === 0 && out === last) return { name: f.at(-1)!, bytes: Number(f[4]) };
      last = out;
      await new Promise((r) => setTimeout(r, 5000));
    }
    throw new Error(`the part file on the medium is still being written: ${last}`);
  }

  const defaultBuild = async () => ({ buildId: (await nas.slots()).lts!.buildId });
  const withoutParts = (listing: string) => listing.split('\n').filter((l) => !l.includes('.part')).join('\n');

  // These kill the `ramboot deploy` process; `ramboot up` killed during the upload and
  // during the health checks is the controller end-to-end test's (test/e2e/controller.test.ts, 7).
  const kills = [
    { at: 'after the label is written and the once-entry armed', killAt: /waiting for nas to come back from the reboot/, step: 'reboot', files: () => ({ [BLOB]: 'small again\n' }) },
    { at: 'during the promotion', killAt: /promoting build/, step: 'promote', files: () => ({ 'root/etc/deploy-test': 'killed during promotion\n' }) },
  ];
  for (const k of kills) {
    it(`5: \`ramboot deploy\` SIGKILLed ${k.at}, then run again: promoted, and the default entry boots the complete image`, async () => {
      // What the machine's default is now: a test that failed before leaves it another than `current`.
      const previous = await defaultBuild();
      const b = await nas.change(k.files(), `a change deployed by a controller killed ${k.at}`);
      const killed = await nas.deployProcess(b.imageDir, k.killAt);
      expect(killed.killed, killed.stderr).toBe(true);
      // The journal holds the deploy open at the step the kill interrupted.
      expect((await nas.lastRecord())?.step).toBe(k.step);

      const r = await nas.deployProcess(b.imageDir);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^promoted: build ${b.buildId} is the default; build ${previous.buildId} is kept as old`));
      const slots = await nas.slots();
      expect(slots.lts?.buildId).toBe(b.buildId);
      expect(slots.old?.buildId).toBe(previous.buildId);
      expect(slots.new).toBeUndefined();
      expect((await nas.lastRecord())?.step).toBe('verdict');

      // Power off and on: the medium's default entry must boot the whole new image.
      const booted = await nas.powerCycle();
      expect(booted.slot).toBe('lts');
      expect(booted.cmdlineBuild).toBe(b.buildId);
      expect(booted.build).toBe(b.buildId);
      current = b;
    }, 25 * 60_000);
  }

  it('power lost right after syslinux.cfg is renamed into place, before anything synced the rename: whatever boots is a complete image, exit 20, the next run finishes the deploy as failed, and the one after deploys', async () => {
    const previous = await defaultBuild();
    const { bootId } = await nas.running();
    const b = await nas.change({ 'root/etc/deploy-test': 'power lost after the label\n' }, 'a change deployed while the power goes');
    // The machine's mv (first on root's PATH, in RAM: gone after the reset) renames, then
    // resets the machine at once for the syslinux.cfg rename: sysrq b syncs nothing and
    // unmounts nothing, as a power cut right after the rename leaves the stick.
    const mv = '#!/bin/sh\n/bin/mv "$@" || exit\ncase "$*" in *syslinux.cfg.tmp*) echo b > /proc/sysrq-trigger ;; esac\n';
    expect((await nas.sh(`printf '%s' '${mv}' > /usr/local/sbin/mv && chmod 755 /usr/local/sbin/mv && command -v mv`)).trim()).toBe('/usr/local/sbin/mv');
    const cut = await nas.deployProcess(b.imageDir);
    nas.log(`the deploy cut by the power: exit ${cut.code}: ${cut.stdout.trim().split('\n').at(-1)}`);
    // The label's write lost its connection and the disarm found no machine: the deploy stays
    // open in the journal, exit 20 (README), and the next run resumes it.
    expect(cut.code, cut.stderr).toBe(20);
    expect(cut.stderr).toMatch(/failed to run `cat > '\/media\/usb\/boot\/syslinux\/syslinux\.cfg\.tmp' .*` on nas: the connection was lost/);
    expect(cut.stderr).not.toMatch(/^\s+at /m);
    const booted = await nas.waitForBoot(bootId);
    const slots = await nas.slots();
    // lts, or the trial had the once-entry been armed: a label's complete image either way.
    expect(booted.cmdlineBuild).toBe(slots[booted.slot as 'lts' | 'new']?.buildId);
    expect(booted.build).toBe(booted.cmdlineBuild);
    // The next run finishes the open deploy: it disarms, and ends with the verdict the cut
    // decided (nothing changed on the machine); the one after deploys the build.
    const resumed = await nas.deployProcess(b.imageDir);
    expect(resumed.code, `${resumed.stdout}\n${resumed.stderr}`).toBe(11);
    expect(resumed.stdout).toMatch(/^upload failed \(nothing changed on the machine\): failed to run `cat > '\/media\/usb\/boot\/syslinux\/syslinux\.cfg\.tmp' .*` on nas: the connection was lost/);
    expect((await nas.slots()).new).toBeUndefined();
    expect((await nas.slots()).lts?.buildId).toBe(previous.buildId);
    const r = await nas.deployProcess(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^promoted: build ${b.buildId} is the default; build ${previous.buildId} is kept as old`));
    current = b;
  }, 25 * 60_000);

  it('a trial whose kernel panics comes back on lts by itself (panic=10); the controller killed during the rollback and the power lost during the cleanup, it still ends "trial unreachable" with lts booting', async () => {
    const good = await defaultBuild();
    const init = readFileSync(join(nas.repo, 'root/init'), 'utf8');
    // An /init that gives up: the kernel panics ("Attempted to kill init") and reboots after 10 s into the default.
    const b = await nas.change({ 'root/init': ['#!/bin/sh\necho "this init gives up"\nexit 1\n', 0o755] }, 'an image whose init dies');
    const bootsBefore = nas.boots().length;
    const first = await nas.deployProcess(b.imageDir, /^deploy: rolling back: /m);
    expect(first.killed, first.stderr).toBe(true);
    expect((await nas.lastRecord())?.step).toBe('rollback');
    expect(nas.vm.serial()).toMatch(/Kernel panic - not syncing: Attempted to kill init/);
    expect(nas.boots().slice(bootsBefore)).toEqual([`new ${b.buildId}`, `lts ${good.buildId}`]);
    const second = await nas.deployProcess(b.imageDir, /removing the candidate from the medium/);
    expect(second.killed, second.stderr).toBe(true);
    expect((await nas.lastRecord())?.step).toBe('cleanup');
    expect(await nas.powerCycle()).toMatchObject({ slot: 'lts', build: good.buildId });
    const last = await nas.deployProcess(b.imageDir);
    expect(last.code, `${last.stdout}\n${last.stderr}`).toBe(13);
    expect(last.stdout).toMatch(/^trial unreachable \(rolled back\): the machine came back on slot lts \(build \S+\): the trial boot failed before it answered/);
    const slots = await nas.slots();
    expect(slots.lts?.buildId).toBe(good.buildId);
    expect(slots.new).toBeUndefined();
    expect(await nas.sh(`ls ${MEDIUM}/boot/ramboot`)).not.toContain(b.segments.find((s) => s.name === 'overlay')!.sha256);
    await nas.change({ 'root/init': [init, 0o755] }, 'a working init again');
  }, 25 * 60_000);
  it('7: a trial whose init hangs before any service is reset by the watchdog armed at the start of the boot; the once-entry is used, so lts boots', async () => {
    const good = await defaultBuild();
    const { built: b, restore } = await hangingInit(nas);
    const bootsBefore = nas.boots().length;
    const r = await nas.deploy(b.imageDir);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(13);
    expect(r.stdout).toMatch(/^trial unreachable \(rolled back\): the machine came back on slot lts/);
    expect(nas.vm.serial()).toContain(`ramboot-early: trial boot: /dev/watchdog armed (${TRIAL_WATCHDOG})`);
    expect(nas.boots().slice(bootsBefore)).toEqual([`new ${b.buildId}`, `lts ${good.buildId}`]);
    await restore();
  }, 25 * 60_000);
});
