import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build, requireRoot } from '../../../builder/build.js';
import { gitSource, listMachines, type Source } from '../../../builder/source.js';
import { readManifest } from '../../../image/manifest.js';
import { EXIT, RambootError } from '../../../lib/errors.js';
import { run } from '../../../lib/run.js';
import { checkRepository } from '../../../plan/check.js';
import { commentTarget, FORGES, postComment, TOKEN_VARIABLES } from '../../../plan/comment.js';
import { planImages } from '../../../plan/compare.js';
import { planMarker, renderMarkdown } from '../../../plan/markdown.js';
import { FORMATS, PLANS_MARKER, renderPlan, renderPlans, renderPlansMarkdown, type MachinePlan } from '../../../plan/render.js';
import { builtBefore, keepRecent, planStore } from '../../../plan/store.js';
import { verb, type Verb } from '../args.js';
import type { Io } from '../commands.js';
import { interruptible } from '../../interrupt.js';
import { openMachine } from '../../open-machine.js';
import { modeFor, renderer, type Renderer } from '../../render.js';

// `ramboot plan` and `ramboot check`: review in pull requests. plan builds both commits
// without their secrets (no identity, nothing decrypted: it runs in untrusted CI) into
// a store of its own (plan/store.ts), so that a secret-less image never replaces the
// controller's image of the same build id and the base's image of an earlier plan can
// be reused; it compares them and optionally posts the Markdown as the machine's one
// comment on the pull request.

/**
 * A plan builds a pull request's commits: whatever they put in a package stage or a
 * base segment stays in a cache of their own, which the controller's builds never read.
 */
export const untrustedCache = (cache: string) => join(cache, 'untrusted-plans');

const repo = { type: 'string', value: 'DIR', default: '.', help: 'the machine\'s repository' } as const;
const state = { type: 'string', value: 'DIR', help: 'the machine\'s state directory: the plan\'s images in DIR/plan, caches in DIR/cache/untrusted-plans (default /var/lib/ramboot/HOST-ID, /var/cache/ramboot/untrusted-plans; also $RAMBOOT_STATE)' } as const;

const PLAN_DETAILS =
  'Exit codes (as terraform plan -detailed-exitcode): 0 no change to the machine, 2 changes, 1 error.\n' +
  'Decrypts nothing and needs no identity: both commits are built without their secrets, and secrets are\n' +
  'compared by name, ciphertext and recipients. The base\'s image from an earlier plan is reused when a build\n' +
  'now would make the same one.\n' +
  '--comment creates the machine\'s plan comment on the pull request, or updates it in place. The token comes\n' +
  `from the first of $${TOKEN_VARIABLES.join(', $')} that is set; the pull request from --pr,\n` +
  'or from the workflow\'s event ($GITHUB_EVENT_PATH, $GITHUB_REF).\n' +
  'In a repository of several machines and without --machine, every machine is planned: one output and one\n' +
  'comment with a section per machine, those with no change listed as such.';

export function planVerbs(io: Io): Verb[] {
  return [
    verb({
      name: 'plan',
      summary: 'build two commits and show what the change does to the machine (packages, files, services, users, kernel, settings, secrets, size); exit 2 on changes',
      details: PLAN_DETAILS,
      args: [
        { name: 'BASE', help: 'the commit the change starts from (a pull request\'s target, e.g. origin/main)' },
        { name: 'HEAD', help: 'the changed commit (default HEAD)', optional: true },
      ],
      options: {
        repo,
        machine: { type: 'string', value: 'NAME', help: 'the machine, in a repository that describes several (machines/NAME/); without it, every machine' },
        format: { type: 'string', choices: FORMATS, default: 'text', help: 'how the plan is written' },
        out: { type: 'string', value: 'FILE', help: 'write the plan to FILE instead of stdout' },
        state,
        comment: { type: 'string', choices: FORGES, help: 'also post the plan (Markdown) as the machine\'s comment on the pull request' },
        'api-url': { type: 'string', value: 'URL', help: 'the forge\'s API (default $GITHUB_API_URL, https://api.github.com; Gitea, Forgejo: $GITHUB_SERVER_URL/api/v1)' },
        repository: { type: 'string', value: 'OWNER/NAME', help: 'the forge repository (default $GITHUB_REPOSITORY)' },
        pr: { type: 'number', min: 1, help: 'the pull request (default: the workflow\'s event)' },
      },
      run: async (o, [baseRev, headRev = 'HEAD']) => {
        requireRoot();
        const target = o.comment ? commentTarget({ forge: o.comment, apiUrl: o['api-url'], repository: o.repository, pr: o.pr }, io.env) : undefined;
        const [base, head] = await Promise.all([commitOf(resolve(o.repo), baseRev), commitOf(resolve(o.repo), headRev)]);
        // A repository of several machines, none named: each machine's plan, in one output and one comment.
        const machines = o.machine ? [] : await listMachines(head);
        const progress = renderer(modeFor(io.stderr, false), io.stderr);
        const plans: MachinePlan[] = [];
        for (const machine of machines.length > 0 ? machines : [o.machine]) {
          if (machines.length > 0) progress.emit({ kind: 'stage', source: 'build', message: `machine ${machine}` });
          plans.push({ machine, ...(await planMachine({ repo: o.repo, state: o.state, machine, base, head, progress, stderr: io.stderr, all: machines.length > 0 })) });
        }
        progress.end();
        const text = machines.length > 0 ? renderPlans(plans, o.format) : renderPlan(plans[0]!.plan!, o.format);
        if (o.out) writeFileSync(resolve(o.out), text);
        else io.stdout.write(text);
        if (target) {
          const [marker, body] = machines.length > 0 ? [PLANS_MARKER, renderPlansMarkdown(plans)] : [planMarker(plans[0]!.plan!.host), renderMarkdown(plans[0]!.plan!)];
          const posted = await postComment(target, marker, body);
          io.stderr.write(`ramboot plan: ${posted.action} the plan comment on ${target.repository}#${target.pr}${posted.url ? ` (${posted.url})` : ''}\n`);
        }
        return plans.some((p) => !p.plan || p.plan.changes > 0) ? EXIT.PLAN_CHANGES : EXIT.OK;
      },
    }),
    verb({
      name: 'check',
      summary: 'for CI: ramboot.yaml valid, secrets encrypted to its recipients, no plaintext private key in root/ or the history, the boot medium mounted private',
      details: 'Checks the commit (--rev, default HEAD), not the working tree: what would be built. Needs no identity and decrypts nothing. Lists every problem, one per line naming its file; exit 1 when there is any.',
      options: {
        repo,
        rev: { type: 'string', value: 'REV', help: 'the commit to check (default HEAD)' },
        base: { type: 'string', value: 'REV', help: 'scan for private keys only the commits after REV (default: the whole history)' },
      },
      run: async (o) => {
        const report = await checkRepository({ repoDir: resolve(o.repo), rev: o.rev, base: o.base });
        for (const p of report.problems) io.stdout.write(`${p}\n`);
        if (report.problems.length > 0) {
          io.stdout.write(`${report.problems.length} problem${report.problems.length === 1 ? '' : 's'}\n`);
          return EXIT.FAILED;
        }
        io.stdout.write(
          `ok: ramboot.yaml is valid; ${report.secrets} secret${report.secrets === 1 ? '' : 's'} encrypted to its recipients; ` +
            `no plaintext private key in root/ or in ${report.commits} commit${report.commits === 1 ? '' : 's'}; the boot medium is mounted private\n`,
        );
        return EXIT.OK;
      },
    }),
  ];
}

/**
 * One machine's plan (or the one machine's): both commits built without secrets into the
 * machine's plan store, the head first. A machine the base does not describe yet has no
 * plan: it is new.
 */
async function planMachine(o: { repo: string; state?: string; machine?: string; base: Source; head: Source; progress: Renderer; stderr: NodeJS.WritableStream; all: boolean }): Promise<Omit<MachinePlan, 'machine'>> {
  const m = await openMachine({ repo: o.repo, rev: o.head.commit, machine: o.machine, state: o.state });
  if (m.notice) o.stderr.write(`${m.notice}\n`);
  if (o.all && !(await listMachines(o.base)).includes(o.machine!)) return { host: m.config.host.name };
  const store = planStore(m.state.dir);
  const plan = await interruptible(async (signal) => {
    const built = async (rev: string, role: string): Promise<string> => {
      o.progress.emit({ kind: 'stage', source: 'build', message: `building ${role}, ${rev} (without secrets, for the plan)` });
      return (await build({ repoDir: m.repo, rev, machine: m.machine, imagesDir: store, cacheDir: untrustedCache(m.state.cache), origin: m.origin, withoutSecrets: true, emit: o.progress.emit, signal })).imageDir;
    };
    // The head first: whether the base's image from an earlier plan is still good depends on it.
    const b = await built(o.head.commit!, 'the head');
    const before = o.head.commit === o.base.commit ? b : builtBefore(store, o.base, await readManifest(b));
    if (before && before !== b) o.progress.emit({ kind: 'stage', source: 'build', message: `reusing the base's image from an earlier plan, ${before}` });
    const a = before ?? (await built(o.base.commit!, 'the base'));
    keepRecent(store, [a, b]);
    return planImages(a, b, { repoDir: m.repo });
  });
  return { host: plan.host, plan };
}

/**
 * The commit a revision names. isomorphic-git resolves refs and commit ids; a relative
 * revision (HEAD~1, main^) is asked of git itself, when it is installed.
 */
async function commitOf(repoDir: string, rev: string): Promise<Source> {
  try {
    return await gitSource(repoDir, rev);
  } catch (err) {
    if (!(err instanceof RambootError) || !/[~^@]/.test(rev)) throw err;
    const oid = await run('git', ['-C', repoDir, 'rev-parse', '--verify', '--quiet', '--end-of-options', `${rev}^{commit}`], { step: `resolve revision ${rev}` }).catch(() => {
      throw err;
    });
    return gitSource(repoDir, oid.stdout.trim());
  }
}
