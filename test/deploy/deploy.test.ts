import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Manifest } from '../../image/manifest.js';
import { parseConfig } from '../../lib/config.js';
import { bootloaderInstall } from '../../deploy/bootloader.js';
import { runCli } from '../../controller/cli/commands.js';
import { deploy, type DeployEvent, type DeployOptions } from '../../deploy/deploy.js';
import { candidateFiles, readSlots } from '../../deploy/medium.js';
import { findDamage, localCopies, scrub } from '../../deploy/integrity.js';
import { Journal } from '../../deploy/journal.js';
import { CFG_PATH, MANAGED_HEADER, contentPath, parseSyslinuxCfg, renderSyslinuxCfg } from '../../deploy/slots.js';
import { connect } from '../../deploy/ssh.js';
import { REASON, VERDICT } from '../../deploy/verdict.js';
import { CLI } from '../helpers/ramboot.js';
import { mountExt2, startSshd, type TestMount, type TestSshd } from '../helpers/sshd.js';

// The controller's half of the protocol against a local OpenSSH server standing in for
// the NAS, with a real ext2 loop mount as its boot medium and the real extlinux. The
// stand-in refuses to reboot (this machine must stay up), so every deploy here ends
// before the trial boot: with the default untouched, the once-entry cleared and the
// verdict "upload failed". The trial, promotion and rollback run on the qemu virtual NAS.

let sshd: TestSshd;
let work: string;
let m: TestMount;
let stateDir: string;

beforeAll(async () => {
  sshd = await startSshd();
  // Safety first: in the stand-in's sessions, reboot is the refusing shim.
  const s = await connect(sshd.target());
  expect((await s.exec('command -v reboot openrc-shutdown')).stdout).toMatch(/shims\/reboot\n.*shims\/openrc-shutdown\n/);
  s.close();
});
afterAll(async () => {
  await sshd.stop();
});

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'ramboot-deploy-'));
  stateDir = join(work, 'state');
  m = await mountExt2(64);
  await mkdir(join(m.dir, 'boot/syslinux'), { recursive: true });
  await execa('extlinux', ['--install', join(m.dir, 'boot/syslinux')]);
});
afterEach(async () => {
  await m.unmount();
  await rm(work, { recursive: true, force: true });
});

interface Image {
  dir: string;
  manifest: Manifest;
}

/** An image directory; `base` is shared between builds the way an unchanged package segment is. */
/** The deploy settings an image carries from its commit's ramboot.yaml. */
const settings = (medium = m.dir) => {
  const c = parseConfig(`host: { name: nas }\nboot: { medium: ${JSON.stringify(medium)}, append: console=ttyS0 }\ntrial: { confirm_timeout: 600, reboot_deadline: 5 }\nhealth: { deadline: 60 }\n`);
  return { host: c.host, boot: c.boot, trial: c.trial, health: c.health };
};

async function makeImage(buildId: string, base: Buffer, opts: { overlayBytes?: number; hostKey?: string; medium?: string } = {}): Promise<Image> {
  const dir = join(work, 'images', buildId);
  await mkdir(dir, { recursive: true });
  const file = async (name: string, data: Buffer) => {
    await writeFile(join(dir, name), data);
    return { file: name, sha256: createHash('sha256').update(data).digest('hex'), bytes: data.length };
  };
  const manifest = {
    formatVersion: 2,
    buildId,
    commit: `commit-${buildId}`,
    commitTime: 0,
    inputsHash: buildId,
    origin: work,
    settings: settings(opts.medium),
    distro: { name: 'debian', release: 'bookworm', arch: 'amd64' },
    host: 'nas',
    kernel: await file('vmlinuz', randomBytes(300_000)),
    segments: [
      { name: 'base' as const, ...(await file('base.cpio.zst', base)) },
      { name: 'overlay' as const, ...(await file('overlay.cpio.zst', randomBytes(opts.overlayBytes ?? 200_000))) },
    ],
    packages: [],
    services: {},
    files: [],
    hostKey: opts.hostKey ?? sshd.hostKey,
    append: 'console=ttyS0',
  } satisfies Manifest;
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return { dir, manifest };
}

/** Puts an image on the medium as `lts`, the way `ramboot format` leaves it. */
async function installAsLts(img: Image): Promise<void> {
  const { kernel, initrds } = candidateFiles(img.dir, img.manifest);
  await mkdir(join(m.dir, 'boot/ramboot'), { recursive: true });
  for (const f of [kernel, ...initrds]) await writeFile(join(m.dir, f.path), await readFile(f.local));
  const lts = { buildId: img.manifest.buildId, kernel: kernel.path, initrds: initrds.map((f) => f.path), append: img.manifest.append };
  await writeFile(join(m.dir, CFG_PATH), renderSyslinuxCfg({ lts }));
}

async function run(img: Image, over: Partial<DeployOptions> = {}) {
  const events: DeployEvent[] = [];
  const journal = await Journal.open(stateDir);
  const { hostKey: _pinnedByImage, ...target } = sshd.target();
  const result = await deploy({ target, journal, imageDir: img.dir, manifest: img.manifest, onEvent: (e) => events.push(e), ...over });
  return { result, events, journal: await Journal.open(stateDir) };
}

/** Every file on the medium with its sha256: what "unchanged" compares. */
async function mediumListing(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(m.dir, rel), { withFileTypes: true })) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(path);
      else out[path] = createHash('sha256').update(await readFile(join(m.dir, path))).digest('hex');
    }
  };
  await walk('');
  return out;
}

const onceArmed = async () => (await readFile(join(m.dir, 'boot/syslinux/ldlinux.sys'))).subarray(-1024).includes(Buffer.from('\x01\x03new', 'latin1'));
const cfg = async () => parseSyslinuxCfg(await readFile(join(m.dir, CFG_PATH), 'utf8'));
/**
 * A stand-in for a crash: it throws from the event handler as the step begins. Unlike a
 * SIGKILL it lets `finally` blocks run, so each test writes by hand what a killed
 * controller leaves; the real SIGKILL is tested on the virtual NAS (test/e2e).
 */
const throwAtStep = (step: string) => (e: DeployEvent) => {
  if (e.kind === 'step' && e.step === step) throw new Error(`stand-in crash before ${step}`);
};

// A deploy waits on reboots and health deadlines of several seconds: 40 s here idle, and
// several times that on a loaded 2-core machine.
describe('deploy against a local sshd standing in for the NAS', { timeout: 5 * 60_000 }, () => {
  it('uploads only the new segments, writes and arms the new label, and disarms when the machine does not reboot', async () => {
    const base = randomBytes(1_000_000);
    const prev = await makeImage('prev', base);
    await installAsLts(prev);
    const cand = await makeImage('cand', base);
    const { result, events, journal } = await run(cand);

    expect(result.outcome).toMatchObject({ verdict: VERDICT.UPLOAD_FAILED, reason: REASON.REBOOT_FAILED });
    expect(result.outcome.message).toBe('failed to reboot nas: `openrc-shutdown -r now || reboot` exited with 99');
    expect(result.outcome.output).toMatch(/reboot: refused by the test sshd/);
    expect(result.exitCode).toBe(11);
    // The base segment was on the medium already: only the kernel and the overlay went over the wire.
    expect(result.bytesSent).toBe(300_000 + 200_000);
    expect(result.imageBytes).toBe(300_000 + 1_000_000 + 200_000);
    expect(events.filter((e) => e.kind === 'upload').at(-1)).toMatchObject({ sent: 500_000, total: 500_000 });
    expect(journal.deploys()[0]!.entries.map((e) => e.step)).toEqual(['start', 'upload', 'label', 'arm', 'reboot', 'disarm', 'verdict']);
    // Disarmed: the default is the previous build, nothing boots the candidate next.
    expect(await cfg()).toEqual({ lts: expect.objectContaining({ buildId: 'prev' }) });
    expect(await onceArmed()).toBe(false);
    // The verified files stay for the next attempt.
    for (const f of [cand.manifest.kernel, ...cand.manifest.segments]) expect(await readdir(join(m.dir, 'boot/ramboot'))).toContain(`${f.sha256}.${f.file === 'vmlinuz' ? 'vmlinuz' : 'cpio.zst'}`);
  });

  it('refuses a machine presenting another host key before anything is written', async () => {
    const prev = await makeImage('prev', randomBytes(1000));
    await installAsLts(prev);
    const before = await readFile(join(m.dir, CFG_PATH), 'utf8');
    const cand = await makeImage('cand', randomBytes(1000), { hostKey: sshd.otherHostKey });
    const logBefore = sshd.log().length;
    const { result, journal } = await run(cand);
    expect(result.outcome.verdict).toBe(VERDICT.UPLOAD_FAILED);
    expect(result.outcome.reason).toBe(REASON.HOST_KEY_MISMATCH);
    expect(result.outcome.message).toMatch(/host key mismatch: expected SHA256:\S+, the machine presented SHA256:\S+/);
    expect(journal.deploys()[0]!.entries.map((e) => e.step)).toEqual(['start', 'disarm', 'verdict']);
    expect(await readFile(join(m.dir, CFG_PATH), 'utf8')).toBe(before);
    expect((await readdir(join(m.dir, 'boot/ramboot'))).length).toBe(3);
    expect(sshd.log().slice(logBefore)).not.toMatch(/Accepted publickey/);
  });

  it('ends with "upload failed" and changes nothing when the medium is not mounted', async () => {
    const plain = join(work, 'not-mounted');
    await mkdir(plain);
    const cand = await makeImage('cand', randomBytes(1000), { medium: plain });
    const { result } = await run(cand);
    expect(result.outcome).toMatchObject({ verdict: VERDICT.UPLOAD_FAILED, reason: REASON.PREFLIGHT_FAILED });
    expect(result.outcome.message).toMatch(/nothing is mounted at/);
    expect(await readdir(plain)).toEqual([]);
  });

  it('refuses a medium ramboot does not manage yet, and leaves it as it was', async () => {
    const foreign = 'DEFAULT linux\nLABEL linux\n  KERNEL /vmlinuz\n';
    await writeFile(join(m.dir, CFG_PATH), foreign);
    const before = await mediumListing();
    const cand = await makeImage('cand', randomBytes(1000));
    const { result } = await run(cand);
    expect(result.outcome.reason).toBe(REASON.PREFLIGHT_FAILED);
    expect(result.outcome.message).toMatch(/not managed by ramboot \(run `ramboot bootloader install --host nas` first\)/);
    expect(await mediumListing()).toEqual(before);
    expect(await readFile(join(m.dir, CFG_PATH), 'utf8')).toBe(foreign);
  });

  it('resumes a deploy stopped during the upload (stand-in crash), sending only what is missing', async () => {
    const base = randomBytes(1_000_000);
    await installAsLts(await makeImage('prev', base));
    const cand = await makeImage('cand', base, { overlayBytes: 2_000_000 });
    await expect(run(cand, { onEvent: throwAtStep('upload') })).rejects.toThrow(/stand-in crash/);
    // What the killed upload left: the kernel verified and renamed, the overlay half-written.
    const { kernel, initrds } = candidateFiles(cand.dir, cand.manifest);
    const overlay = initrds[1]!;
    await writeFile(join(m.dir, kernel.path), await readFile(kernel.local));
    await writeFile(join(m.dir, `${overlay.path}.part`), (await readFile(overlay.local)).subarray(0, 1_000_000));

    const { result, journal } = await run(cand);
    expect(journal.deploys()).toHaveLength(1);
    expect(journal.deploys()[0]!.entries.map((e) => e.step)).toEqual(['start', 'upload', 'label', 'arm', 'reboot', 'disarm', 'verdict']);
    // The kernel is on the medium and half the overlay is in its part file: the other half is sent.
    expect(result.bytesSent).toBe(1_000_000);
    expect(await readdir(join(m.dir, 'boot/ramboot'))).not.toContain(`${overlay.path.split('/').pop()}.part`);
  });

  it('disarms a deploy of an older build stopped after arming (stand-in crash) before deploying a newer one', async () => {
    const base = randomBytes(100_000);
    await installAsLts(await makeImage('prev', base));
    const older = await makeImage('older', base);
    await expect(run(older, { onEvent: throwAtStep('arm') })).rejects.toThrow(/stand-in crash/);
    // Killed right after arming: `new` names the older build and the once-entry is set.
    await execa('extlinux', ['--once=new', join(m.dir, 'boot/syslinux')]);
    expect((await cfg()).new?.buildId).toBe('older');
    expect((await Journal.open(stateDir)).open()?.last.step).toBe('arm');

    const newer = await makeImage('newer', base);
    const { result, journal } = await run(newer);
    const [first, second] = journal.deploys();
    expect(first!.entries.map((e) => e.step)).toEqual(['start', 'upload', 'label', 'arm', 'disarm', 'verdict']);
    expect(first!.verdict?.outcome).toMatchObject({ verdict: VERDICT.UPLOAD_FAILED, reason: REASON.SUPERSEDED });
    expect(second!.plan?.buildId).toBe('newer');
    expect(result.outcome.reason).toBe(REASON.REBOOT_FAILED);
    expect(await cfg()).toEqual({ lts: expect.objectContaining({ buildId: 'prev' }) });
    expect(await onceArmed()).toBe(false);
  });

  it('does not deploy a build that was rolled back, unless forced', async () => {
    const journal = await Journal.open(stateDir);
    await journal.record('d0', {
      step: 'verdict',
      buildId: 'cand',
      outcome: { verdict: VERDICT.NOT_HEALTHY, reason: REASON.CHECK_FAILED, message: 'health check "web" failed' },
    });
    await installAsLts(await makeImage('prev', randomBytes(1000)));
    const cand = await makeImage('cand', randomBytes(1000));
    await expect(run(cand)).rejects.toThrow(/it was rolled back on .*health check "web" failed.*unless forced \(--force\)/);
    expect((await run(cand, { force: true })).result.outcome.reason).toBe(REASON.REBOOT_FAILED);
  });
});

describe('the boot medium is never trusted blindly (local sshd standing in for the NAS)', { timeout: 5 * 60_000 }, () => {
  /** Overwrites 16 bytes in the middle of a file on the medium, as a cheap USB stick does. */
  async function damage(path: string): Promise<void> {
    const full = join(m.dir, path);
    const data = await readFile(full);
    randomBytes(16).copy(data, Math.floor(data.length / 2));
    await writeFile(full, data);
  }
  const named = async (name: 'base' | 'overlay', img: Image) => candidateFiles(img.dir, img.manifest).initrds.find((f) => f.path.endsWith('.cpio.zst') && f.sha256 === img.manifest.segments.find((x) => x.name === name)!.sha256)!;

  it('repairs a damaged file the new labels name (the shared base) from the controller\'s copy before writing a label', async () => {
    const base = randomBytes(1_000_000);
    const prev = await makeImage('prev', base);
    await installAsLts(prev);
    const baseFile = await named('base', prev);
    await damage(baseFile.path);
    const cand = await makeImage('cand', base);
    const { result, journal } = await run(cand, { images: [join(work, 'images')] });
    const label = journal.deploys()[0]!.entries.find((e) => e.step === 'label');
    expect(label).toMatchObject({ repaired: [baseFile.path] });
    expect(createHash('sha256').update(await readFile(join(m.dir, baseFile.path))).digest('hex')).toBe(baseFile.sha256);
    // The stand-in refuses to reboot, so the deploy ends before the trial, with the medium healed.
    expect(result.outcome.reason).toBe(REASON.REBOOT_FAILED);
  });

  it('stops before any label changes, with "medium damaged", when the controller has no copy of the damaged file', async () => {
    const prev = await makeImage('prev', randomBytes(100_000));
    await installAsLts(prev);
    const overlay = await named('overlay', prev);
    await damage(overlay.path);
    const before = await readFile(join(m.dir, CFG_PATH), 'utf8');
    // The candidate shares nothing with lts, and the controller kept no other image.
    const cand = await makeImage('cand', randomBytes(100_000));
    const { result } = await run(cand, { images: [] });
    expect(result).toMatchObject({ exitCode: 14, outcome: { verdict: VERDICT.MEDIUM_DAMAGED, reason: REASON.MEDIUM_DAMAGED } });
    expect(result.outcome.message).toContain(overlay.path);
    expect(result.outcome.message).toMatch(/named by lts/);
    expect(await readFile(join(m.dir, CFG_PATH), 'utf8')).toBe(before);
    expect(await onceArmed()).toBe(false);
  });

  it('scrub finds a damaged file of old (not lts) and --repair fixes it from the controller\'s images', async () => {
    const older = await makeImage('older', randomBytes(50_000));
    const current = await makeImage('current', randomBytes(50_000));
    await installAsLts(current);
    const { kernel, initrds } = candidateFiles(older.dir, older.manifest);
    for (const f of [kernel, ...initrds]) await writeFile(join(m.dir, f.path), await readFile(f.local));
    const slots = await cfg();
    const oldEntry = { buildId: 'older', kernel: kernel.path, initrds: initrds.map((f) => f.path), append: '' };
    await writeFile(join(m.dir, CFG_PATH), renderSyslinuxCfg({ ...slots, old: oldEntry }));
    const oldOverlay = await named('overlay', older);
    await damage(oldOverlay.path);
    const s = await connect(sshd.target());
    try {
      const found = await scrub(s, m.dir, await readSlots(s, m.dir), localCopies([join(work, 'images')]), false);
      expect(found.damaged.map((d) => [d.path, d.labels])).toEqual([[oldOverlay.path, ['old']]]);
      expect(found.labels.find((l) => l.label === 'lts')!.files.every((f) => f.state === 'ok')).toBe(true);
      const fixed = await scrub(s, m.dir, await readSlots(s, m.dir), localCopies([join(work, 'images')]), true);
      expect(fixed).toMatchObject({ repaired: [oldOverlay.path], damaged: [] });
      expect(await findDamage(s, m.dir, await readSlots(s, m.dir))).toEqual([]);
    } finally {
      s.close();
    }
  });
});

describe('bootloader install against a local sshd standing in for the NAS', { timeout: 5 * 60_000 }, () => {
  async function legacyMedium(withNew: boolean) {
    const boot = join(m.dir, 'boot');
    const files: Record<string, Buffer> = {};
    for (const slot of ['lts', 'old', ...(withNew ? ['new'] : [])]) {
      files[`vmlinuz-${slot}`] = randomBytes(50_000);
      files[`initramfs-${slot}`] = randomBytes(80_000);
    }
    for (const [name, data] of Object.entries(files)) await writeFile(join(boot, name), data);
    const legacy = [
      'SERIAL 0 115200',
      'DEFAULT lts',
      'LABEL lts',
      '  LINUX /boot/vmlinuz-lts',
      '  INITRD /boot/initramfs-lts',
      '  APPEND modules=loop,usb-storage console=ttyS0',
      'LABEL old',
      '  LINUX /boot/vmlinuz-old',
      '  INITRD /boot/initramfs-old',
      '  APPEND modules=loop,usb-storage console=ttyS0 quiet',
      '',
    ].join('\n');
    await writeFile(join(m.dir, 'boot/syslinux/syslinux.cfg'), legacy);
    return { files, legacy };
  }
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  it('adopts a reference-NAS medium: content files, managed syslinux.cfg, extlinux; the old files untouched', async () => {
    const { files, legacy } = await legacyMedium(true);
    await writeFile(join(m.dir, 'boot/syslinux/extlinux.conf'), legacy);
    const r = await bootloaderInstall(sshd.target(), { medium: m.dir, append: 'console=ttyS0', firmware: 'bios' });
    expect(r.adopted).toEqual(['lts', 'old', 'new']);
    expect(r.movedAside.sort()).toEqual(['boot/syslinux/extlinux.conf.pre-ramboot', 'boot/syslinux/syslinux.cfg.pre-ramboot']);
    const text = await readFile(join(m.dir, CFG_PATH), 'utf8');
    expect(text.startsWith(MANAGED_HEADER)).toBe(true);
    const slots = parseSyslinuxCfg(text);
    expect(slots.lts).toEqual({
      buildId: expect.stringMatching(/^adopted-[0-9a-f]{12}$/),
      kernel: contentPath(sha(files['vmlinuz-lts']!), 'vmlinuz'),
      initrds: [contentPath(sha(files['initramfs-lts']!), 'initramfs')],
      append: 'modules=loop,usb-storage console=ttyS0',
    });
    expect(slots.old?.append).toBe('modules=loop,usb-storage console=ttyS0 quiet');
    // No config for -new: it gets the configured APPEND.
    expect(slots.new?.append).toBe('console=ttyS0');
    for (const e of Object.values(slots)) {
      for (const f of [e!.kernel, ...e!.initrds]) expect(sha(await readFile(join(m.dir, f)))).toBe(f.split('/').pop()!.split('.')[0]);
    }
    for (const [name, data] of Object.entries(files)) expect((await readFile(join(m.dir, 'boot', name))).equals(data)).toBe(true);
    expect(await readFile(join(m.dir, 'boot/syslinux/syslinux.cfg.pre-ramboot'), 'utf8')).toBe(legacy);
    expect(await readdir(join(m.dir, 'boot/syslinux'))).toContain('ldlinux.sys');

    // Again: already managed, nothing adopted, the same slots.
    const again = await bootloaderInstall(sshd.target(), { medium: m.dir, append: '', firmware: 'bios' });
    expect(again).toEqual({ slots, adopted: [], movedAside: [], firmware: 'bios' });
  });

  it('refuses boot.firmware: uefi on a machine that booted with BIOS, naming both, before anything is written', async () => {
    await legacyMedium(true);
    const before = await readdir(m.dir, { recursive: true });
    const err = (await bootloaderInstall(sshd.target(), { medium: m.dir, append: '', firmware: 'uefi' }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/failed to install the bootloader: ramboot.yaml says boot.firmware: uefi, but \S+ booted with BIOS \(no \/sys\/firmware\/efi\): set boot.firmware: bios/);
    expect(await readdir(m.dir, { recursive: true })).toEqual(before);
  });

  it('refuses a medium with nothing bootable', async () => {
    await expect(bootloaderInstall(sshd.target(), { medium: m.dir, append: '', firmware: 'bios' })).rejects.toThrow(/nothing bootable to adopt/);
    expect(await readdir(join(m.dir, 'boot/syslinux'))).toEqual(['ldlinux.c32', 'ldlinux.sys']);
  });
});

describe('the deploy verbs of the CLI against a local sshd standing in for the NAS', { timeout: 5 * 60_000 }, () => {
  class Sink extends Writable {
    text = '';
    isTTY = false;
    _write(chunk: Buffer, _enc: string, cb: () => void) {
      this.text += chunk.toString();
      cb();
    }
  }
  const cli = async (argv: string[]) => {
    const out = new Sink();
    const err = new Sink();
    const code = await runCli(argv, { stdin: process.stdin, stdout: out, stderr: err, env: process.env });
    return { code, out: out.text, err: err.text };
  };
  /** A committed repository: status and bootloader read the committed ramboot.yaml, never the working tree. */
  async function repo(): Promise<string> {
    const dir = join(work, 'repo');
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, 'ramboot.yaml'),
      [
        'host:',
        '  name: nas',
        '  address: 127.0.0.1',
        `  port: ${sshd.port}`,
        `  identity: ${sshd.clientKey}`,
        'boot:',
        `  medium: ${m.dir}`,
        'trial: { confirm_timeout: 600, reboot_deadline: 5 }',
        'health: { deadline: 60 }',
        '',
      ].join('\n'),
    );
    const git = (...args: string[]) => execa('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd: dir });
    await git('init', '-q', '-b', 'main');
    await git('add', '-A');
    await git('commit', '-q', '-m', 'machine');
    return dir;
  }
  const reach = () => ['--address', '127.0.0.1', '--port', String(sshd.port), '--ssh-key', sshd.clientKey];

  it('deploy: --host naming another machine than the image\'s is a command-line error (64) and contacts nothing', async () => {
    const img = await makeImage('cand', randomBytes(1000));
    const logBefore = sshd.log().length;
    const r = await cli(['deploy', '--image', img.dir, '--host', 'fileserver', '--state', stateDir, ...reach()]);
    expect(r.code).toBe(64);
    expect(r.err).toMatch(/--host fileserver: this repository \(or image\) describes nas/);
    expect(sshd.log().slice(logBefore)).not.toMatch(/Accepted publickey/);
  });

  it('deploy: prints progress on stderr and a one-line verdict on stdout, and exits with its code', async () => {
    const base = randomBytes(100_000);
    await installAsLts(await makeImage('prev', base));
    const img = await makeImage('cand', base);
    const r = await cli(['deploy', '--image', img.dir, '--host', 'nas', '--state', stateDir, ...reach()]);
    expect(r.code).toBe(11);
    expect(r.err).toMatch(/deploy: nas runs build unknown from slot \(not booted by ramboot\)/);
    expect(r.err).toMatch(/deploy: uploading to nas\n( {2}sent .* of 488.3 KiB .*\n)*deploy: sent 488.3 KiB\n/);
    expect(r.err).toMatch(/deploy: rebooting nas into the trial\ndeploy: disarming the trial: failed to reboot nas: .* exited with 99\n$/);
    expect(r.out).toBe(
      'upload failed (nothing changed on the machine): failed to reboot nas: `openrc-shutdown -r now || reboot` exited with 99 ' +
        '(sent 488.3 KiB of a 585.9 KiB image, 83.3%)\n  | openrc-shutdown: refused by the test sshd\n  | reboot: refused by the test sshd\n',
    );
  });

  it('deploy: SIGTERM during the upload ends the process at once with 143; the journal holds the deploy, and the next run resumes it', async () => {
    const base = randomBytes(100_000);
    await installAsLts(await makeImage('prev', base));
    // An overlay big enough that the upload is still going when the signal comes.
    const img = await makeImage('cand', base, { overlayBytes: 30_000_000 });
    const child = execa('node', [CLI, 'deploy', '--image', img.dir, '--state', stateDir, ...reach()], { reject: false, stdin: 'ignore' });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += String(d);
      if (/uploading to nas/.test(err) && !child.killed) child.kill('SIGTERM');
    });
    const r = await child;
    expect(r.exitCode, `${err}\n${r.stdout}`).toBe(143);
    expect(err).toMatch(/interrupted by SIGTERM during the deploy; the medium boots the last good image; run ramboot deploy again to resume/);
    const journal = await Journal.open(stateDir);
    expect(journal.open()?.last.step).toBe('upload');
    expect((await cfg()).lts?.buildId).toBe('prev');

    const again = await cli(['deploy', '--image', img.dir, '--state', stateDir, ...reach()]);
    // The stand-in refuses the reboot: the resumed deploy ends "upload failed", as every deploy here.
    expect(again.code, again.err).toBe(11);
    expect((await Journal.open(stateDir)).deploys()).toHaveLength(1);
  });

  it('deploy --json: every progress line on stderr is a JSON event', async () => {
    const base = randomBytes(10_000);
    await installAsLts(await makeImage('prev', base));
    const img = await makeImage('cand', base);
    const r = await cli(['deploy', '--image', img.dir, '--state', stateDir, '--json', ...reach()]);
    expect(r.code).toBe(11);
    const events = r.err.trim().split('\n').map((l) => JSON.parse(l) as { kind: string });
    expect(events.map((e) => e.kind)).toEqual(expect.arrayContaining(['step', 'running', 'upload']));
  });

  it('status: the running build, the slots and the last verdict', async () => {
    await installAsLts(await makeImage('prev', randomBytes(1000)));
    const journal = await Journal.open(stateDir);
    await journal.record('d1', {
      step: 'verdict',
      buildId: 'prev',
      hostKey: sshd.hostKey,
      outcome: { verdict: VERDICT.PROMOTED, reason: REASON.HEALTHY, message: 'build prev is the default' },
    });
    const r = await cli(['status', '--repo', await repo(), '--state', stateDir]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^host nas\n {2}running {2}build unknown \(no \/etc\/ramboot-release\) from slot \(not booted by ramboot\)\n {2}boots {4}BIOS, syslinux.cfg\n {2}lts {6}build prev\n {2}old {6}\(empty\)\n {2}new {6}\(empty\)\n {2}last {5}promoted \(prev, .*\): build prev is the default\ncontroller: not running \(ramboot up starts it; state .*\)\n$/);
  });
});
