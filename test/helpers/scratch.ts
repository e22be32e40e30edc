import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

// Every test run writes its temporary files under one scratch directory that is removed
// when the run ends, so a run leaves nothing in /tmp however its tests end. Workers are
// started after this runs and inherit TMPDIR, which os.tmpdir() reads.
export default function setup(): () => Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ramboot-tests-'));
  process.env.TMPDIR = dir;
  return async () => {
    // --one-file-system: a mount a killed build left must stop the removal, not be emptied.
    const r = await execa('rm', ['-rf', '--one-file-system', dir], { reject: false });
    if (r.exitCode !== 0) console.warn(`test scratch ${dir} not fully removed: ${r.stderr.trim()}`);
  };
}
