import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Manifest } from '../image/manifest.js';
import { RambootError, UsageError } from '../lib/errors.js';
import { CFG_PATH, FILES_DIR, LITERAL_SUFFIX, PART_SUFFIX, SLOTS, contentPath, MANAGED_HEADER, parseSyslinuxCfg, referencedFiles, renderSyslinuxCfg, type SlotName, type SlotTable } from './slots.js';
import { ENTRIES_DIR, SD_BOOT_PATH, entryFile } from './entries.js';
import { readEntrySlots, writeEntries } from './esp.js';
import { assemblyScript, makeDelta, worthDelta, type Delta } from './delta.js';
import { shq, type Session } from './ssh.js';

// The boot medium as seen over SSH (docs/ARCHITECTURE.md, "Deploy"): checks before
// anything is written, uploads to temporary names that become content files only once
// their sha256 matched, and labels replaced by renames: syslinux.cfg on BIOS, the boot
// entries on UEFI (esp.ts).

export type PreflightFailure = 'not-mounted' | 'read-only' | 'no-space' | 'no-extlinux' | 'no-systemd-boot' | 'firmware-mismatch' | 'not-managed' | 'secrets-exposed';

/** How the machine boots, and so which layout names the slots: syslinux.cfg (BIOS) or boot entries on an ESP (UEFI). */
export type Firmware = 'bios' | 'uefi';

/** The machine is not ready for a deploy; the user must fix it. Nothing was changed. */
export class PreflightError extends UsageError {
  readonly reason: PreflightFailure;
  constructor(reason: PreflightFailure, host: string, medium: string, problem: string, output?: string) {
    super(`failed to check boot medium ${medium} on ${host}: ${problem}`, { step: 'preflight', host, input: medium, output });
    this.reason = reason;
  }
}

/** Room left on the medium beyond the files themselves: the syslinux.cfg temp file and FAT cluster slack. */
export const SPACE_MARGIN_BYTES = 4 * 1024 * 1024;
/** Flushing tens of MiB to a slow USB stick takes a while. */
export const SYNC_TIMEOUT_MS = 10 * 60_000;

export interface MountEntry {
  source: string;
  mountPoint: string;
  fsType: string;
  options: string[];
}

/** /proc/mounts; octal escapes (\040 for a space) decoded. */
export function parseMounts(text: string): MountEntry[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 4)
    .map(([source, mountPoint, fsType, options]) => ({
      source: unescape(source!),
      mountPoint: unescape(mountPoint!),
      fsType: fsType!,
      options: options!.split(','),
    }));
}

/** Available bytes from `df -P -k <dir>` (POSIX format: busybox and coreutils agree). */
export function parseDfAvailable(text: string): number | undefined {
  const fields = text.trim().split('\n').at(-1)?.trim().split(/\s+/);
  const kib = Number(fields?.[3]);
  return fields && fields.length >= 6 && Number.isFinite(kib) ? kib * 1024 : undefined;
}

/** Regular files and their sizes from `ls -ln`; the names ramboot writes have no spaces. */
export function parseLs(text: string): Map<string, number> {
  const files = new Map<string, number>();
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 9 && f[0]!.startsWith('-')) files.set(f.at(-1)!, Number(f[4]));
  }
  return files;
}

export interface MediumState {
  /** The medium's mount point as configured (boot.medium). */
  medium: string;
  mount: MountEntry;
  freeBytes: number;
  firmware: Firmware;
  cfg: { text?: string; slots: SlotTable; managed: boolean };
  /** Files under boot/ramboot (paths relative to the medium) and their sizes. */
  files: Map<string, number>;
}

/**
 * Checks that the machine booted with the firmware the configuration names, that the
 * medium is mounted read-write and its boot loader installed (extlinux, or systemd-boot on
 * the ESP), and reads its slots, content files and free space. Writes nothing but a probe
 * file it removes.
 */
export async function inspectMedium(session: Session, medium: string, firmware: Firmware = 'bios'): Promise<MediumState> {
  const host = session.target.name;
  const fail = (reason: PreflightFailure, problem: string, output?: string) => new PreflightError(reason, host, medium, problem, output);

  const where = await session.exec(`cd ${shq(medium)} && pwd -P`);
  if (where.code !== 0) throw fail('not-mounted', `${medium} does not exist (mount the boot medium there or set boot.medium in ramboot.yaml)`, where.stderr);
  const physical = where.stdout.trim();
  const mounts = parseMounts(await session.check('read /proc/mounts', 'cat /proc/mounts'));
  // Mounts stack: the last entry for a mount point is the one in effect.
  const mount = mounts.filter((m) => m.mountPoint === physical).at(-1);
  if (!mount) throw fail('not-mounted', `nothing is mounted at ${medium} (mount the boot medium there or set boot.medium in ramboot.yaml)`);
  if (mount.options.includes('ro')) throw fail('read-only', `${mount.source} is mounted read-only at ${medium} (remount it read-write: mount -o remount,rw ${medium})`);
  const probe = `${medium}/.ramboot-probe`;
  const write = await session.exec(`: > ${shq(probe)} && rm -f ${shq(probe)}`);
  if (write.code !== 0) throw fail('read-only', `cannot write to ${medium}: ${write.stderr.trim()}`, write.stderr);

  const booted = await bootedFirmware(session);
  if (booted !== firmware) throw fail('firmware-mismatch', firmwareMismatch(host, firmware, booted));
  if (firmware === 'bios') {
    const extlinux = await session.exec('command -v extlinux');
    if (extlinux.code !== 0 || !extlinux.stdout.trim()) {
      throw fail('no-extlinux', 'extlinux is not installed on the machine (add the syslinux package (Alpine) or extlinux (Debian) to the image)');
    }
  }

  const df = await session.check('measure free space', `df -P -k ${shq(medium)}`);
  const freeBytes = parseDfAvailable(df);
  if (freeBytes === undefined) throw new RambootError(`failed to measure free space on ${medium} on ${host}: unexpected df output "${df.trim()}"`, { step: 'preflight', host, output: df });

  const cfg = firmware === 'uefi' ? await readUefiCfg(session, medium) : await readBiosCfg(session, medium);
  if (firmware === 'uefi' && cfg.managed && (await session.exec(`test -f ${shq(`${medium}/${SD_BOOT_PATH}`)}`)).code !== 0) {
    throw fail('no-systemd-boot', `systemd-boot is missing from ${medium}/${SD_BOOT_PATH} (run \`ramboot bootloader install\`)`);
  }
  const files = parseLs((await session.exec(`ls -ln ${shq(`${medium}/${FILES_DIR}`)}`)).stdout);
  return {
    medium,
    mount,
    freeBytes,
    firmware,
    cfg,
    files: new Map([...files].map(([name, size]) => [`${FILES_DIR}/${name}`, size])),
  };
}

async function readBiosCfg(session: Session, medium: string): Promise<MediumState['cfg']> {
  const r = await session.exec(`cat ${shq(`${medium}/${CFG_PATH}`)}`);
  const text = r.code === 0 ? r.stdout : undefined;
  const slots = text ? parseSyslinuxCfg(text) : {};
  return { text, slots, managed: !!text?.startsWith(MANAGED_HEADER) && !!slots.lts };
}

async function readUefiCfg(session: Session, medium: string): Promise<MediumState['cfg']> {
  const { slots, text } = await readEntrySlots(session, medium);
  return { text: text || undefined, slots, managed: !!slots.lts };
}

/** The firmware the machine booted with: the kernel makes /sys/firmware/efi only on UEFI. */
export async function bootedFirmware(session: Session): Promise<Firmware> {
  return (await session.exec('test -d /sys/firmware/efi')).code === 0 ? 'uefi' : 'bios';
}

export function firmwareMismatch(host: string, configured: Firmware, booted: Firmware): string {
  return `ramboot.yaml says boot.firmware: ${configured}, but ${host} booted with ${booted === 'uefi' ? 'UEFI (/sys/firmware/efi exists)' : 'BIOS (no /sys/firmware/efi)'}: ` +
    `set boot.firmware: ${booted} in ramboot.yaml, or boot the machine with ${configured === 'uefi' ? 'UEFI' : 'legacy BIOS (CSM)'}; nothing was written`;
}

/** Which layout names the slots on this medium: boot entries (UEFI) when loader/entries exists, else syslinux.cfg. */
export async function mediumLayout(session: Session, medium: string): Promise<Firmware> {
  return (await session.exec(`test -d ${shq(`${medium}/${ENTRIES_DIR}`)}`)).code === 0 ? 'uefi' : 'bios';
}

/** A file of the candidate image and where it lives on the medium. */
export interface CandidateFile {
  /** Relative to the medium: boot/ramboot/<sha256>.<kind>. */
  path: string;
  sha256: string;
  bytes: number;
  /** The file in the image directory on the controller. */
  local: string;
  /** The segment it is (base, overlay, secrets); absent for the kernel and microcode. */
  segment?: string;
}

/** An image's boot files as they are named on the medium, in INITRD order (microcode first). */
export function candidateFiles(imageDir: string, m: Manifest): { kernel: CandidateFile; initrds: CandidateFile[] } {
  const file = (f: { file: string; sha256: string; bytes: number; name?: string }, kind: 'vmlinuz' | 'ucode' | 'cpio.zst'): CandidateFile => ({
    path: contentPath(f.sha256, kind),
    sha256: f.sha256,
    bytes: f.bytes,
    local: join(imageDir, f.file),
    ...(f.name ? { segment: f.name } : {}),
  });
  return {
    kernel: file(m.kernel, 'vmlinuz'),
    initrds: [...(m.ucode ? [file(m.ucode, 'ucode')] : []), ...m.segments.map((s) => file(s, 'cpio.zst'))],
  };
}

export interface UploadPlan {
  /** Not on the medium: uploaded. */
  missing: CandidateFile[];
  /** Bytes of a missing file already in its `.part` file (a cut upload): only the rest is sent. */
  resume: Map<string, number>;
  /** On the medium but named by no label (left by an interrupted deploy): hashed before use. */
  unverified: CandidateFile[];
  /** Bytes of a delta's literal already on the medium (a cut upload of it), by the file it makes. */
  literals: Map<string, number>;
  /** Named by no label and not needed: deleted before uploading, to make room. */
  stale: string[];
  /** Bytes still to send. */
  bytes: number;
}

/** Which files to send: a file a label names was verified before that label was written. */
export function planUpload(state: MediumState, candidate: CandidateFile[]): UploadPlan {
  const named = referencedFiles(state.cfg.slots);
  const wanted = new Set(candidate.map((f) => f.path));
  const missing = candidate.filter((f) => !state.files.has(f.path));
  const unverified = candidate.filter((f) => state.files.has(f.path) && !named.has(f.path));
  const literals = new Map<string, number>();
  for (const f of missing) {
    const literal = state.files.get(`${f.path}${LITERAL_SUFFIX}`);
    if (literal !== undefined && literal > 0) literals.set(f.path, literal);
  }
  // A part no longer than its file is the start of it (bytes arrive in order); the hash after the upload checks that.
  const resume = new Map<string, number>();
  for (const f of missing) {
    const part = state.files.get(`${f.path}${PART_SUFFIX}`);
    // Beside a literal, the part is a cut assembly's, whose writer may still run: the delta is made again instead.
    if (part !== undefined && part > 0 && part <= f.bytes && !literals.has(f.path)) resume.set(f.path, part);
  }
  const kept = (p: string) => resume.has(p.slice(0, -PART_SUFFIX.length)) || literals.has(p.slice(0, -LITERAL_SUFFIX.length));
  const stale = [...state.files.keys()].filter((p) => !named.has(p) && !wanted.has(p) && !kept(p));
  const bytes = missing.reduce((n, f) => n + f.bytes - (resume.get(f.path) ?? 0), 0);
  return { missing, resume, literals, unverified, stale, bytes };
}

/** Fails when the upload would not fit, before anything is written. */
export function checkSpace(state: MediumState, plan: UploadPlan, host: string): void {
  const freed = plan.stale.reduce((n, p) => n + (state.files.get(p) ?? 0), 0);
  const need = plan.bytes + SPACE_MARGIN_BYTES;
  if (state.freeBytes + freed < need) {
    throw new PreflightError(
      'no-space',
      host,
      state.medium,
      `not enough free space: ${mib(need)} needed (${mib(plan.bytes)} to upload + ${mib(SPACE_MARGIN_BYTES)} margin), ${mib(state.freeBytes + freed)} available`,
    );
  }
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export interface UploadProgress {
  file: string;
  sent: number;
  total: number;
  /** Set when the file is made on the machine from a delta against a file the medium has. */
  basis?: string;
}

/** A verified file on the medium (named by a label) and the controller's copy of it. */
export interface Basis {
  path: string;
  local: string;
}

export interface UploadOptions {
  onProgress?: (p: UploadProgress) => void;
  /** Files on the medium a missing file may be made from (deploy/delta.ts); none: every file is sent whole. */
  bases?: (f: CandidateFile) => Basis[];
  /** A delta that did not give the file (a damaged basis): it is then sent whole. */
  onWarn?: (message: string) => void;
  /** What the upload does besides sending (making a file from a delta). */
  onStep?: (message: string) => void;
}

/**
 * The bases of a candidate's boot file: the file at the same place in each label's list
 * (the same segment of an earlier build), when the controller has its copy; lts, then
 * old and new. A file of the candidate itself is no basis.
 */
export function basesFor(slots: SlotTable, candidate: { initrds: string[] }, copies: Map<string, string>): (f: CandidateFile) => Basis[] {
  return (f) => {
    const at = candidate.initrds.indexOf(f.path);
    if (at < 0) return [];
    const seen = new Set<string>();
    const out: Basis[] = [];
    for (const slot of SLOTS) {
      const entry = slots[slot];
      if (!entry || entry.initrds.length !== candidate.initrds.length) continue;
      const path = entry.initrds[at]!;
      const sha256 = /([0-9a-f]{64})\.cpio\.zst$/.exec(path)?.[1];
      const local = sha256 && copies.get(sha256);
      if (!local || path === f.path || seen.has(path)) continue;
      seen.add(path);
      out.push({ path, local });
    }
    return out;
  };
}

interface Chosen {
  basis: Basis;
  delta: Delta;
  script: string;
  bytes: number;
}

const lastLine = (text: string) => text.trim().split('\n').at(-1) ?? '';

/** The cheapest delta for `f` against its bases, if it costs less than `whole` bytes; secrets are always sent whole. */
function chooseDelta(f: CandidateFile, bases: Basis[], medium: string, whole: number): Chosen | undefined {
  if (!f.segment || f.segment === 'secrets' || bases.length === 0) return undefined;
  const target = readFileSync(f.local);
  const final = `${medium}/${f.path}`;
  let best: Chosen | undefined;
  for (const basis of bases) {
    const delta = makeDelta(readFileSync(basis.local), target);
    const script = assemblyScript(delta.ops, { basis: `${medium}/${basis.path}`, literal: `${final}${LITERAL_SUFFIX}`, out: `${final}${PART_SUFFIX}` });
    const bytes = delta.literal.length + Buffer.byteLength(script);
    if (!best || bytes < best.bytes) best = { basis, delta, script, bytes };
  }
  return best && worthDelta(best.bytes, whole) ? best : undefined;
}

/**
 * Deletes stale files, checks the unverified ones, and uploads the missing ones to
 * `<name>.part`, resuming a part a cut upload left; a file gets its content name only
 * after its sha256 matched on the machine. A segment that is cheaper as a delta against
 * one the medium has is made on the machine from it instead (delta.ts). Returns the
 * bytes sent.
 */
export async function uploadFiles(session: Session, medium: string, plan: UploadPlan, opts: UploadOptions = {}): Promise<number> {
  const dir = `${medium}/${FILES_DIR}`;
  await session.check('prepare the medium', `mkdir -p ${shq(dir)}${plan.stale.map((p) => ` && rm -f ${shq(`${medium}/${p}`)}`).join('')}`);
  const send = plan.missing.map((f) => ({ f, offset: plan.resume.get(f.path) ?? 0 }));
  for (const f of plan.unverified) {
    if ((await session.sha256(`${medium}/${f.path}`)) !== f.sha256) {
      await session.check('remove a corrupt file', `rm -f ${shq(`${medium}/${f.path}`)}`);
      send.push({ f, offset: 0 });
    }
  }
  const jobs = send.map((j) => ({ ...j, delta: chooseDelta(j.f, opts.bases?.(j.f) ?? [], medium, j.f.bytes - j.offset) }));
  const literalLeft = (d: Chosen, had: number) => d.delta.literal.length - (had <= d.delta.literal.length ? had : 0);
  const progress = { sent: 0, total: jobs.reduce((n, j) => n + (j.delta ? literalLeft(j.delta, plan.literals.get(j.f.path) ?? 0) : j.f.bytes - j.offset), 0) };
  const put = async (f: CandidateFile, part: string, offset: number) => {
    const before = progress.sent;
    progress.sent += await session.upload(f.local, part, (n) => opts.onProgress?.({ file: f.path, sent: before + n, total: progress.total }), offset);
    return session.sha256(part);
  };
  for (const { f, offset, delta } of jobs) {
    const final = `${medium}/${f.path}`;
    const part = `${final}${PART_SUFFIX}`;
    let got: string;
    if (delta) {
      const made = await sendDelta(session, medium, f, delta, plan.literals.get(f.path) ?? 0, progress, opts);
      got = made.sha256 ?? '';
      if (got !== f.sha256) {
        const why = made.why ?? `the result has sha256 ${got}, not ${f.sha256}: ${delta.basis.path} on the medium is not what its name says (a failing stick)`;
        opts.onWarn?.(`failed to make ${f.path} on ${session.target.name} from ${delta.basis.path}: ${why}; sending it whole`);
        // Sent from its start: into a new inode (Session.upload), where no writer of the failed assembly reaches.
        progress.total += f.bytes;
        got = await put(f, part, 0);
      }
    } else {
      got = await put(f, part, offset);
      if (got !== f.sha256 && offset > 0) {
        // The part was not the start of this file after all (a writer from the cut connection
        // still appending, a medium that lost its tail): send the whole file once more.
        progress.total += f.bytes;
        got = await put(f, part, 0);
      }
    }
    if (got !== f.sha256) {
      await session.check('remove a corrupt upload', `rm -f ${shq(part)}`);
      throw new RambootError(`failed to upload ${f.local} to ${session.target.name}: sha256 on the machine is ${got}, expected ${f.sha256}`, {
        step: 'upload',
        host: session.target.name,
        input: f.local,
      });
    }
    await session.rename(part, final);
  }
  await session.check('flush the medium', 'sync', { timeoutMs: SYNC_TIMEOUT_MS });
  return progress.sent;
}

/**
 * Sends a delta's literal (resuming one a cut upload left, when it is the start of this
 * one), has the machine write the part from it and the basis, and returns the part's
 * sha256, or why there is none.
 */
async function sendDelta(
  session: Session,
  medium: string,
  f: CandidateFile,
  c: Chosen,
  had: number,
  progress: { sent: number; total: number },
  opts: UploadOptions,
): Promise<{ sha256?: string; why?: string }> {
  const literal = `${medium}/${f.path}${LITERAL_SUFFIX}`;
  const tmp = mkdtempSync(join(tmpdir(), 'ramboot-delta-'));
  try {
    writeFileSync(join(tmp, 'literal'), c.delta.literal);
    const send = async (offset: number) => {
      const before = progress.sent;
      const onProgress = (n: number) => opts.onProgress?.({ file: f.path, sent: before + n, total: progress.total, basis: c.basis.path });
      progress.sent += await session.upload(join(tmp, 'literal'), literal, onProgress, offset);
      return session.sha256(literal);
    };
    const expected = createHash('sha256').update(c.delta.literal).digest('hex');
    let sha = await send(had <= c.delta.literal.length ? had : 0);
    if (sha !== expected && had > 0) {
      // What a cut upload left was not the start of this literal: it goes again, whole.
      progress.total += c.delta.literal.length;
      sha = await send(0);
    }
    if (sha !== expected) return { why: `the delta's ${c.delta.literal.length} bytes arrived as sha256 ${sha}, not ${expected}` };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  opts.onStep?.(`making ${f.path} on ${session.target.name} from ${c.basis.path} and ${c.delta.literal.length} bytes sent (${f.bytes} whole)`);
  const r = await session.exec('sh -s', { stdin: c.script, timeoutMs: SYNC_TIMEOUT_MS });
  await session.check('remove a delta', `rm -f ${shq(literal)}`);
  // A machine whose dd lacks skip_bytes fails here; the caller then sends the file whole.
  if (r.code !== 0) return { why: `\`sh -s\` (dd) exited with ${r.code ?? r.signal}: ${lastLine(`${r.stdout}${r.stderr}`)}` };
  return { sha256: await session.sha256(`${medium}/${f.path}${PART_SUFFIX}`) };
}

/**
 * Makes the medium's labels those of the slot table. BIOS: syslinux.cfg replaced in one
 * rename, the new text on the medium before the rename and the rename on it after. UEFI:
 * the boot entries (esp.ts), a candidate in `new` counted for one try, which arms it.
 */
export async function writeCfg(session: Session, medium: string, slots: SlotTable, firmware: Firmware = 'bios'): Promise<void> {
  if (firmware === 'uefi') return writeEntries(session, medium, slots);
  const cfg = `${medium}/${CFG_PATH}`;
  const tmp = `${cfg}.tmp`;
  await session.check('write syslinux.cfg', `cat > ${shq(tmp)} && sync && mv -f ${shq(tmp)} ${shq(cfg)} && sync`, {
    stdin: renderSyslinuxCfg(slots),
    timeoutMs: SYNC_TIMEOUT_MS,
  });
}

/** Deletes every file under boot/ramboot that no label names (and any upload left half done). */
export async function removeUnreferenced(session: Session, medium: string, slots: SlotTable): Promise<string[]> {
  const named = referencedFiles(slots);
  const present = parseLs((await session.exec(`ls -ln ${shq(`${medium}/${FILES_DIR}`)}`)).stdout);
  const doomed = [...present.keys()].map((n) => `${FILES_DIR}/${n}`).filter((p) => !named.has(p));
  if (doomed.length > 0) {
    await session.check('delete unreferenced files', `rm -f ${doomed.map((p) => shq(`${medium}/${p}`)).join(' ')} && sync`, { timeoutMs: SYNC_TIMEOUT_MS });
  }
  return doomed;
}

/** FAT16 ends a file at 2 GiB (FAT32 at 4): the free space is filled with files of less. */
const WIPE_FILE_MIB = 2047;
/** The slowest USB stick the wipe's timeout allows for. */
const WIPE_MIN_BYTES_PER_S = 2 * 1024 * 1024;
const WIPE_GLOB = `wipe*${PART_SUFFIX}`;

/**
 * Overwrites the medium's free space with zeros: a deleted file's clusters keep its bytes
 * on FAT. Files of zeros fill the medium until dd meets ENOSPC (any other error fails the
 * step), are synced, then removed; a cut wipe's files are removed by removeCutWipe before
 * the next write. On a flash stick, blocks its controller remapped are out of reach:
 * docs/decisions.md says what that means for secrets once on it in plaintext.
 */
export async function wipeFreeSpace(session: Session, medium: string): Promise<void> {
  const dir = shq(`${medium}/${FILES_DIR}`);
  const free = parseDfAvailable((await session.exec(`df -P -k ${shq(medium)}`)).stdout) ?? 0;
  const err = '/tmp/ramboot-wipe.err';
  await session.check(
    'overwrite the free space',
    `i=0; while dd if=/dev/zero of=${dir}/wipe$i${PART_SUFFIX} bs=1M count=${WIPE_FILE_MIB} 2>${err}; do i=$((i + 1)); done; ` +
      `grep -q 'No space left' ${err}; full=$?; cat ${err} >&2; rm -f ${err}; sync; rm -f ${dir}/${WIPE_GLOB} && sync && ` +
      `{ [ $full = 0 ] || { echo 'dd stopped before the medium was full' >&2; exit 1; }; }`,
    { timeoutMs: SYNC_TIMEOUT_MS + (free / WIPE_MIN_BYTES_PER_S) * 1000 },
  );
}

/** A wipe cut by a crash leaves files that fill the medium: they go before anything else is written. */
export async function removeCutWipe(session: Session, medium: string): Promise<void> {
  await session.check('remove a cut wipe', `rm -f ${shq(`${medium}/${FILES_DIR}`)}/${WIPE_GLOB}`);
}

/**
 * Makes the next boot, and only the next one, boot `label`. On UEFI the counted entry
 * the label step wrote is the arm; armed again (a resumed deploy whose trial a power cut
 * already booted), a tried or blessed entry gets its one try back.
 */
export async function armOnce(session: Session, medium: string, label: SlotName, firmware: Firmware = 'bios'): Promise<void> {
  if (firmware === 'uefi') {
    const dir = shq(`${medium}/${ENTRIES_DIR}`);
    const counted = entryFile(label, { left: 1, done: 0 }).split('/').pop()!;
    await session.check('arm the trial entry', `cd ${dir} && for f in ${label}.conf ${label}+*.conf; do [ -f "$f" ] && [ "$f" != ${counted} ] && mv -f "$f" ${counted}; done; sync`);
    return;
  }
  await session.check('arm the boot-once entry', `extlinux --once=${label} ${shq(`${medium}/boot/syslinux`)}`);
}

/** On UEFI nothing is armed apart from the entry, which writeCfg removes. */
export async function clearOnce(session: Session, medium: string, firmware: Firmware = 'bios'): Promise<void> {
  if (firmware === 'uefi') return;
  await session.check('clear the boot-once entry', `extlinux --clear-once ${shq(`${medium}/boot/syslinux`)}`);
}

/** The current slot table, read fresh (a resumed deploy must not trust an earlier reading), in the layout the medium has. */
export async function readSlots(session: Session, medium: string): Promise<SlotTable> {
  if ((await mediumLayout(session, medium)) === 'uefi') return (await readEntrySlots(session, medium)).slots;
  const r = await session.exec(`cat ${shq(`${medium}/${CFG_PATH}`)}`);
  if (r.code !== 0) throw new RambootError(`failed to read ${medium}/${CFG_PATH} on ${session.target.name}: ${r.stderr.trim()}`, { step: 'read syslinux.cfg', host: session.target.name, output: r.stderr });
  return parseSyslinuxCfg(r.stdout);
}
