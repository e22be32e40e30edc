import { worthDelta } from '../deploy/delta.js';
import type { Manifest, SegmentName } from '../image/manifest.js';

// What an image costs: its bytes (kernel, microcode, segments), the RAM its unpacked
// files take, and what a deploy of it would upload to a medium that holds the other
// image. The medium keeps files by content (boot/ramboot/<sha256>.*), so a file whose
// hash the medium already has is not sent again, and a changed segment is sent as a
// delta against the one it replaces when that is smaller (deploy/delta.ts).

export type MediumFile = 'kernel' | 'ucode' | SegmentName;

export interface UploadRow {
  file: MediumFile;
  /** Bytes sent; undefined when only the controller can know (the secrets segment, built with the decrypted secrets). */
  bytes?: number;
  sent: boolean;
  note?: string;
}

export interface SizeReport {
  /** Bytes of the kernel, microcode and segments. */
  image: { before: number; after: number };
  /**
   * The unpacked files in RAM, each rounded up to 4 KiB pages as tmpfs holds them; the
   * secrets are left out, as an image built for a plan has none.
   */
  ram: { before: number; after: number };
  upload: UploadRow[];
  /** The bytes of the rows that are sent and known. */
  uploadBytes: number;
}

const PAGE = 4096;

function mediumFiles(m: Manifest): { file: MediumFile; sha256: string; bytes: number }[] {
  return [
    { file: 'kernel', sha256: m.kernel.sha256, bytes: m.kernel.bytes },
    ...(m.ucode ? [{ file: 'ucode' as const, sha256: m.ucode.sha256, bytes: m.ucode.bytes }] : []),
    ...m.segments.map((s) => ({ file: s.name, sha256: s.sha256, bytes: s.bytes })),
  ];
}

function ram(m: Manifest): number {
  return m.files.reduce((n, f) => n + ((f.type ?? 'file') === 'file' && f.segment !== 'secrets' ? Math.ceil(f.size / PAGE) * PAGE : 0), 0);
}

const carriesSecrets = (m: Manifest) => m.files.some((f) => f.segment === 'secrets');

/**
 * `headSecrets` is the number of secrets the head commit has: an image built without
 * them (`ramboot plan` never decrypts) has an empty secrets segment, while the one the
 * controller builds holds them with the commit's time, so it differs in every commit.
 */
export function sizeReport(before: Manifest, after: Manifest, headSecrets: number, deltaOf?: (segment: SegmentName) => number | undefined): SizeReport {
  const onMedium = new Set(mediumFiles(before).map((f) => f.sha256));
  const upload = mediumFiles(after).map((f): UploadRow => {
    if (f.file === 'secrets' && !carriesSecrets(after) && headSecrets > 0) {
      return { file: f.file, sent: true, note: 'built by the controller with the decrypted secrets' };
    }
    const sent = !onMedium.has(f.sha256);
    if (!sent) return { file: f.file, bytes: f.bytes, sent, note: 'already on the medium' };
    const delta = f.file === 'kernel' || f.file === 'ucode' ? undefined : deltaOf?.(f.file);
    if (delta !== undefined && worthDelta(delta, f.bytes)) return { file: f.file, bytes: delta, sent, note: `a delta against the base's ${f.file} (${f.bytes} bytes whole)` };
    return { file: f.file, bytes: f.bytes, sent };
  });
  const total = (m: Manifest) => mediumFiles(m).reduce((n, f) => n + f.bytes, 0);
  return {
    image: { before: total(before), after: total(after) },
    ram: { before: ram(before), after: ram(after) },
    upload,
    uploadBytes: upload.reduce((n, r) => n + (r.sent ? (r.bytes ?? 0) : 0), 0),
  };
}
