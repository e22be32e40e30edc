import { describe, expect, it } from 'vitest';
import type { FileChange } from '../../plan/files.js';
import { COMMENT_LIMIT, codeSpan, planMarker, renderMarkdown } from '../../plan/markdown.js';
import { emptyPlan, markdownStructure } from './helpers.js';

// The pull request comment: always within GitHub's 65,536 characters (counted here in
// UTF-8 bytes, which are never fewer), cut largest section first and saying so, and
// still well-formed Markdown with balanced <details>.

function changedFile(i: number, diffLines = 6): FileChange {
  const path = `srv/www/page-${String(i).padStart(5, '0')}.html`;
  const body = Array.from({ length: diffLines }, (_, k) => `-<p>old line ${k}</p>\n+<p>new line ${k} ünïcødé</p>`).join('\n');
  return {
    path,
    change: 'changed',
    before: { type: 'file', mode: 0o644, uid: 0, gid: 0, size: 100, sha256: 'a'.repeat(64), segment: 'overlay' },
    after: { type: 'file', mode: 0o644, uid: 0, gid: 0, size: 120, sha256: 'b'.repeat(64), segment: 'overlay' },
    what: ['content'],
    diff: `--- a/${path}\n+++ b/${path}\n@@ -1,${diffLines} +1,${diffLines} @@\n${body}`,
  };
}

const bytes = (s: string) => Buffer.byteLength(s);

describe('the plan as a pull request comment', () => {
  it('cuts a plan of thousands of changed files to fit 65,536 characters, says what it cut, and keeps <details> balanced', () => {
    const files = Array.from({ length: 4000 }, (_, i) => changedFile(i));
    const plan = emptyPlan({
      files,
      packages: { added: [{ name: 'nginx', version: '1.26.2-r0', listed: true }], removed: [], upgraded: [] },
      changes: files.length + 1,
    });
    const md = renderMarkdown(plan);
    expect(bytes(md)).toBeLessThanOrEqual(COMMENT_LIMIT);
    expect(md.length).toBeLessThanOrEqual(COMMENT_LIMIT);
    const s = markdownStructure(md);
    expect(s.problems).toEqual([]);
    expect(s.summaries).toEqual(['Packages: 1 added', 'Files: 4000 changed', 'Size and upload']);
    // The summary says what was cut, and so does the section itself.
    const cut = /Cut to fit a comment \(65,536 characters\): files \(([\d,]+) of 4,000 not shown\)/.exec(md);
    expect(cut, md.slice(0, 2000)).not.toBeNull();
    const notShown = Number(cut![1]!.replace(/,/g, ''));
    expect(md).toContain(`_… ${notShown.toLocaleString('en')} more not shown`);
    const shown = (md.match(/^- \*\*changed\*\* `srv\/www\//gm) ?? []).length;
    expect(shown + notShown).toBe(4000);
    // The small section is whole: the largest is cut first.
    expect(md).toContain('- **added** `nginx` 1.26.2-r0 (listed)');
    // Most of the room is used: the cut is not far more than needed.
    expect(bytes(md)).toBeGreaterThan(COMMENT_LIMIT - 1000);
  });

  it('cuts the largest sections down to each other before cutting smaller ones', () => {
    const files = Array.from({ length: 3000 }, (_, i) => changedFile(i, 1));
    const accounts = Array.from({ length: 1500 }, (_, i) => ({ kind: 'user' as const, name: `user${i}`, change: 'added' as const, details: [`uid ${2000 + i}`, 'home /home/x', 'shell /bin/sh'] }));
    const services = [{ runlevel: 'default', added: ['sshd'], removed: [] }];
    const md = renderMarkdown(emptyPlan({ files, accounts, services, changes: 4501 }));
    expect(bytes(md)).toBeLessThanOrEqual(COMMENT_LIMIT);
    expect(markdownStructure(md).problems).toEqual([]);
    expect(md).toMatch(/users and groups \([\d,]+ of 1,500 not shown\), files \([\d,]+ of 3,000 not shown\)/);
    expect(md).toContain('- **added** `sshd` to runlevel `default`');
    const section = (title: string) => md.slice(md.indexOf(`<summary>${title}`), md.indexOf('</details>', md.indexOf(`<summary>${title}`)));
    const [f, u] = [bytes(section('Files')), bytes(section('Users and groups'))];
    // Cut to about the same size, one item's worth apart.
    expect(Math.abs(f - u)).toBeLessThan(600);
  });

  it('shortens a diff too long for a comment inside its own fence', () => {
    const big = changedFile(1, 2000);
    const md = renderMarkdown(emptyPlan({ files: [big], changes: 1 }));
    expect(markdownStructure(md).problems).toEqual([]);
    expect(md).toMatch(/… \d+ more lines of this diff cut\n  ````?\n/);
    expect(md).not.toContain('Cut to fit');
  });

  it('keeps names holding backticks, pipes and HTML as code, so they cannot break the comment', () => {
    const nasty = { ...changedFile(1), path: 'etc/`odd`|</details><script>x</script>', diff: '--- a/x\n+++ b/x\n@@ -1 +1 @@\n-```\n+</details>' };
    const md = renderMarkdown(emptyPlan({ files: [nasty], accounts: [{ kind: 'user', name: 'eve', change: 'added', details: ['name "<b>Eve</b> *bold* | pipe"'] }], changes: 2 }));
    const s = markdownStructure(md);
    expect(s.problems).toEqual([]);
    expect(s.details).toBe(3);
    expect(md).toContain(codeSpan('etc/`odd`|</details><script>x</script>'));
    expect(md).toContain('&lt;b&gt;Eve&lt;/b&gt; \\*bold\\* \\| pipe');
    expect(md).not.toContain('<script>x</script>\n');
  });

  it('says "no change to the machine" and still shows the sizes when nothing changes', () => {
    const md = renderMarkdown(emptyPlan());
    expect(md.split('\n')[0]).toBe(planMarker('nas'));
    expect(md).toContain('no change to the machine');
    expect(markdownStructure(md).summaries).toEqual(['Size and upload']);
    expect(md).toContain('| image | 1000 B (unchanged) |');
  });

  it('starts with a hidden marker that names the machine, and no other machine\'s', () => {
    expect(renderMarkdown(emptyPlan({ host: 'nas-2' })).startsWith('<!-- ramboot-plan host="nas-2" -->\n')).toBe(true);
    // The poster looks for the marker as a substring: one machine's must not be found in another's.
    expect(planMarker('nas-2').includes(planMarker('nas'))).toBe(false);
  });
});
