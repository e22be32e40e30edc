import { ENTRIES_DIR, entriesFor, parseEntryFile, slotsFromEntries, type Counter } from './entries.js';
import { SYNC_TIMEOUT_MS } from './medium.js';
import type { SlotName, SlotTable } from './slots.js';
import { shq, type Session } from './ssh.js';

// The UEFI layout on the machine's medium, over SSH: the entries are read together and
// written one file at a time, each through a temporary name and a rename, in an order
// that leaves a complete default at every moment (old, then lts, then new; entries no
// longer wanted go last).

/** Every entry file ramboot may have written, and its text (one command, not one per file). */
export async function readEntryFiles(session: Session, medium: string): Promise<{ path: string; text: string }[]> {
  const dir = `${medium}/${ENTRIES_DIR}`;
  const sep = '\u001eramboot-entry ';
  const r = await session.exec(`cd ${shq(dir)} 2>/dev/null || exit 0; for f in *.conf; do [ -f "$f" ] || continue; printf '${sep}%s\\n' "$f"; cat "$f"; done`);
  return r.stdout
    .split(sep)
    .slice(1)
    .map((chunk) => {
      const nl = chunk.indexOf('\n');
      return { path: `${ENTRIES_DIR}/${chunk.slice(0, nl)}`, text: chunk.slice(nl + 1) };
    });
}

export async function readEntrySlots(session: Session, medium: string): Promise<{ slots: SlotTable; counters: Partial<Record<SlotName, Counter>>; text: string }> {
  const files = await readEntryFiles(session, medium);
  return { ...slotsFromEntries(files), text: files.map((f) => `# ${f.path}\n${f.text}`).join('\n') };
}

/** Makes the entries on the medium those of the slot table; `new`, when present, counted for one try. */
export async function writeEntries(session: Session, medium: string, slots: SlotTable): Promise<void> {
  const present = (await readEntryFiles(session, medium)).map((f) => f.path).filter((p) => parseEntryFile(p));
  const wanted = entriesFor(slots);
  const wantedPaths = new Set(wanted.map((w) => w.path));
  const order: SlotName[] = ['old', 'lts', 'new'];
  wanted.sort((a, b) => order.indexOf(parseEntryFile(a.path)!.slot) - order.indexOf(parseEntryFile(b.path)!.slot));
  const script: string[] = [`mkdir -p ${shq(`${medium}/${ENTRIES_DIR}`)}`];
  for (const w of wanted) {
    const slot = parseEntryFile(w.path)!.slot;
    // Another file of the same slot (a tried or blessed `new`) goes before the new one is named.
    for (const p of present.filter((p) => parseEntryFile(p)!.slot === slot && p !== w.path)) script.push(`rm -f ${shq(`${medium}/${p}`)}`);
    const target = `${medium}/${w.path}`;
    script.push(`printf %s ${shq(w.text)} > ${shq(`${target}.tmp`)} && sync && mv -f ${shq(`${target}.tmp`)} ${shq(target)} && sync`);
  }
  for (const p of present.filter((p) => !wantedPaths.has(p) && !wanted.some((w) => parseEntryFile(w.path)!.slot === parseEntryFile(p)!.slot))) {
    script.push(`rm -f ${shq(`${medium}/${p}`)}`);
  }
  script.push('sync');
  await session.check('write the boot entries', script.join(' && '), { timeoutMs: SYNC_TIMEOUT_MS });
}
