import { parseCmdline, renderSlotArgs, userArgs } from '../image/cmdline.js';

// The three slots, and the managed syslinux.cfg that names them on BIOS (docs/ARCHITECTURE.md,
// "Deploy"; on UEFI they are boot entries: entries.ts). Files are content-addressed
// under boot/ramboot/, so promotion only rewrites this file, never moves an image.

export type SlotName = 'lts' | 'old' | 'new';
export const SLOTS: SlotName[] = ['lts', 'old', 'new'];

export interface SlotEntry {
  buildId: string;
  /** Paths relative to the medium root, e.g. "boot/ramboot/<sha256>.vmlinuz". */
  kernel: string;
  initrds: string[];
  append: string;
}

export type SlotTable = Partial<Record<SlotName, SlotEntry>>;

export const CFG_PATH = 'boot/syslinux/syslinux.cfg';
export const FILES_DIR = 'boot/ramboot';
/** The suffix of an upload in progress; such a file is never named by a label. */
export const PART_SUFFIX = '.part';
/** The suffix of a delta's literal bytes while a file is assembled from it (delta.ts); never named by a label. */
export const LITERAL_SUFFIX = '.lit';
/** The first line of every syslinux.cfg ramboot writes: how a managed medium is recognised. */
export const MANAGED_HEADER = '# Managed by ramboot';

/** "initramfs" names an initramfs adopted from a medium ramboot did not make (its compression is unknown). */
export type ContentKind = 'vmlinuz' | 'ucode' | 'cpio.zst' | 'initramfs' | 'efi';

export function contentPath(sha256: string, kind: ContentKind): string {
  return `${FILES_DIR}/${sha256}.${kind}`;
}

export function renderSyslinuxCfg(slots: SlotTable, serial = true): string {
  const lines = [
    `${MANAGED_HEADER}: rewritten on every deploy. Edit ramboot.yaml instead.`,
    ...(serial ? ['SERIAL 0 115200'] : []),
    'DEFAULT lts',
    'PROMPT 0',
    'TIMEOUT 10',
  ];
  for (const name of SLOTS) {
    const e = slots[name];
    if (!e) continue;
    lines.push(
      '',
      `LABEL ${name}`,
      `  # build ${e.buildId}`,
      `  KERNEL /${e.kernel}`,
      `  INITRD ${e.initrds.map((f) => `/${f}`).join(',')}`,
      `  APPEND ${appendLine(name, e)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function appendLine(name: SlotName, e: SlotEntry): string {
  return [renderSlotArgs(name, e.buildId), e.append].filter(Boolean).join(' ');
}

/** One LABEL of any syslinux configuration, paths relative to the medium root. */
export interface CfgLabel {
  name: string;
  kernel?: string;
  initrds: string[];
  append: string;
}

/** Reads the labels and the DEFAULT of a syslinux configuration, whoever wrote it. */
export function parseLabels(text: string): { default?: string; labels: CfgLabel[] } {
  const labels: CfgLabel[] = [];
  let def: string | undefined;
  let current: CfgLabel | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const [word, ...rest] = line.split(/\s+/);
    const arg = rest.join(' ');
    switch (word?.toUpperCase()) {
      case 'DEFAULT':
        def = arg;
        break;
      case 'LABEL':
        current = { name: arg, initrds: [], append: '' };
        labels.push(current);
        break;
      case 'KERNEL':
      case 'LINUX':
        if (current) current.kernel = arg.replace(/^\//, '');
        break;
      case 'INITRD':
        if (current) current.initrds = arg.split(',').map((f) => f.replace(/^\//, ''));
        break;
      case 'APPEND':
        if (current) {
          // "initrd=" on the APPEND line is the older way to name the initramfs.
          const initrd = /(?:^|\s)initrd=(\S+)/.exec(arg)?.[1];
          if (initrd && current.initrds.length === 0) current.initrds = initrd.split(',').map((f) => f.replace(/^\//, ''));
          current.append = arg.replace(/(?:^|\s)initrd=\S+/, '').trim();
        }
        break;
    }
  }
  return { default: def, labels };
}

/** Reads back a syslinux.cfg written by renderSyslinuxCfg; labels it did not write are ignored. */
export function parseSyslinuxCfg(text: string): SlotTable {
  const slots: SlotTable = {};
  for (const l of parseLabels(text).labels) {
    const buildId = parseCmdline(l.append).build;
    if (!(SLOTS as string[]).includes(l.name) || !l.kernel || !buildId) continue;
    slots[l.name as SlotName] = {
      buildId,
      kernel: l.kernel,
      initrds: l.initrds,
      append: userArgs(l.append),
    };
  }
  return slots;
}

/** Every file some label names; anything else under boot/ramboot/ may be deleted. */
export function referencedFiles(slots: SlotTable): Set<string> {
  const files = new Set<string>();
  for (const e of Object.values(slots)) {
    if (!e) continue;
    files.add(e.kernel);
    for (const f of e.initrds) files.add(f);
  }
  return files;
}

/** The candidate in `new`; the default and its predecessor untouched. */
export function withCandidate(slots: SlotTable, candidate: SlotEntry): SlotTable {
  return { lts: slots.lts, old: slots.old, new: candidate };
}

/**
 * Promotion: `lts` names the candidate, `old` the former default, `new` is dropped.
 * Promoting the build that already is the default keeps its predecessor in `old`.
 */
export function promoted(slots: SlotTable, candidate: SlotEntry): SlotTable {
  const formerDefault = slots.lts;
  const old = formerDefault && formerDefault.buildId !== candidate.buildId ? formerDefault : slots.old;
  return { lts: candidate, old };
}

/** After a failed trial: the candidate leaves the medium, the default and its predecessor stay. */
export function withoutCandidate(slots: SlotTable): SlotTable {
  return { lts: slots.lts, old: slots.old };
}
