import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { initRepo, ramboot, tempDir } from '../helpers/ramboot.js';

// The CI workflows ramboot scaffolds: GitHub Actions, Forgejo Actions and Gitea Actions
// each run `ramboot check` and `ramboot plan --comment` on pull requests. Their shell
// steps run here against a stand-in `ramboot` (and a stand-in `sudo`) that records its
// arguments and exits as told, to show what CI would do with each exit code.

const TEMPLATE = new URL('../../repo-template/', import.meta.url).pathname;
const WORKFLOWS = [
  { file: '.github/workflows/ramboot.yml', forge: 'github' },
  { file: '.forgejo/workflows/ramboot.yml', forge: 'forgejo' },
  { file: '.gitea/workflows/ramboot.yml', forge: 'gitea' },
];

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
}

interface Workflow {
  on: Record<string, unknown>;
  jobs: Record<string, { steps: Step[] }>;
  permissions?: Record<string, string>;
}

let work: string;
let bin: string;

beforeAll(() => {
  work = tempDir('workflows');
  bin = join(work, 'bin');
  mkdirSync(bin);
  // Stand-ins: ramboot records its arguments and environment and exits with $STANDIN_EXIT;
  // sudo drops its options and runs the rest.
  // With --identity it also records the file's mode and text, and the registry login it was given.
  writeFileSync(
    join(bin, 'ramboot'),
    [
      '#!/usr/bin/env node',
      "const fs = require('fs');",
      'const argv = process.argv.slice(2);',
      "const at = argv.indexOf('--identity');",
      'const identity = at >= 0 ? { mode: (fs.statSync(argv[at + 1]).mode & 0o777).toString(8), text: fs.readFileSync(argv[at + 1], "utf8") } : undefined;',
      "const login = process.env.RAMBOOT_REGISTRY_USERNAME ? `${process.env.RAMBOOT_REGISTRY_USERNAME}:${process.env.RAMBOOT_REGISTRY_PASSWORD}` : undefined;",
      "fs.appendFileSync(process.env.STANDIN_LOG, JSON.stringify({ argv, token: process.env.RAMBOOT_FORGE_TOKEN, identity, login }) + '\\n');",
      'process.exit(Number(process.env.STANDIN_EXIT));',
      '',
    ].join('\n'),
  );
  writeFileSync(join(bin, 'sudo'), '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n');
  for (const f of ['ramboot', 'sudo']) chmodSync(join(bin, f), 0o755);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function load(file: string): Workflow {
  return parse(readFileSync(join(TEMPLATE, file), 'utf8')) as Workflow;
}

/** What the runner puts for the expressions the workflows use. */
const EXPRESSIONS: Record<string, string> = {
  'github.base_ref': 'main',
  'github.ref_name': 'main',
  'github.actor': 'octocat',
  'secrets.GITHUB_TOKEN': 'job-token',
  'vars.RAMBOOT_REGISTRY': 'registry.example.org/me/frood',
  'vars.RAMBOOT_REGISTRY_USERNAME': 'octocat',
  'secrets.RAMBOOT_REGISTRY_PASSWORD': 'job-token',
  'secrets.RAMBOOT_IDENTITY': 'AGE-SECRET-KEY-1TESTIDENTITY',
};

interface Call {
  argv: string[];
  token?: string;
  identity?: { mode: string; text: string };
  login?: string;
}

/** Runs a step's script as the runners do (bash -e), with the stand-ins first on PATH. */
function runStep(step: Step, exit: number): { status: number; calls: Call[]; temp: string } {
  const log = join(work, `log-${Math.random()}`);
  writeFileSync(log, '');
  const temp = join(work, `runner-temp-${Math.random()}`);
  mkdirSync(temp);
  const env: Record<string, string> = { PATH: `${bin}:${process.env.PATH}`, STANDIN_LOG: log, STANDIN_EXIT: String(exit), RUNNER_TEMP: temp };
  for (const [k, v] of Object.entries(step.env ?? {})) {
    env[k] = v.replace(/\$\{\{ ([\w.]+) \}\}/g, (_, e: string) => {
      if (!(e in EXPRESSIONS)) throw new Error(`the workflow uses \${{ ${e} }}, which this test does not know`);
      return EXPRESSIONS[e]!;
    });
  }
  const r = spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', step.run!], { env, encoding: 'utf8' });
  const calls = readFileSync(log, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Call);
  return { status: r.status ?? -1, calls, temp };
}

describe('the CI workflows in repo-template/', () => {
  for (const { file, forge } of WORKFLOWS) {
    describe(file, () => {
      const wf = () => load(file);
      const steps = () => Object.values(wf().jobs)[0]!.steps;
      const step = (what: string) => steps().find((s) => s.run?.includes(`ramboot ${what}`) || s.run?.includes(`"$(command -v ramboot)" ${what}`))!;

      it('runs on pull requests and checks out the base and every commit', () => {
        expect(Object.keys(wf().on)).toEqual(['pull_request']);
        expect(steps().find((s) => s.uses?.startsWith('actions/checkout'))?.with).toEqual({ 'fetch-depth': 0 });
        if (forge === 'github') expect(wf().permissions).toEqual({ contents: 'read', 'pull-requests': 'write' });
      });

      it('fails the job when ramboot check finds problems, and scans only the pull request\'s commits', () => {
        expect(runStep(step('check'), 0)).toMatchObject({ status: 0, calls: [{ argv: ['check', '--base', 'origin/main'] }] });
        expect(runStep(step('check'), 1).status).toBe(1);
      });

      it(`posts the plan with --comment ${forge} and the job's token, passes on exit 0 and 2, fails on 1`, () => {
        const ok = runStep(step('plan'), 2);
        expect(ok.status).toBe(0);
        expect(ok.calls).toEqual([{ argv: ['plan', 'origin/main', 'HEAD', '--comment', forge], token: 'job-token' }]);
        expect(runStep(step('plan'), 0).status).toBe(0);
        expect(runStep(step('plan'), 1).status).not.toBe(0);
      });
    });
  }

  for (const { file, forge } of WORKFLOWS) {
    const publishFile = file.replace('ramboot.yml', 'ramboot-publish.yml');
    it(`${publishFile}: on pushes to main only, when RAMBOOT_REGISTRY is set, publishes the branch's tag with the identity in a private file removed afterwards`, () => {
      const wf = load(publishFile);
      expect(wf.on).toEqual({ push: { branches: ['main'] } });
      const job = wf.jobs.publish as { if?: string; steps: Step[] };
      expect(job.if).toBe("vars.RAMBOOT_REGISTRY != ''");
      if (forge === 'github') expect(wf.permissions).toEqual({ contents: 'read', packages: 'write' });
      const step = job.steps.find((s) => s.run?.includes('publish'))!;
      for (const exit of [0, 1]) {
        const r = runStep(step, exit);
        expect(r.status === 0).toBe(exit === 0);
        expect(r.calls).toEqual([
          {
            argv: ['publish', '--registry', 'registry.example.org/me/frood:main', '--identity', join(r.temp, 'ramboot-identity')],
            identity: { mode: '600', text: 'AGE-SECRET-KEY-1TESTIDENTITY\n' },
            login: 'octocat:job-token',
          },
        ]);
        expect(readdirSync(r.temp)).toEqual([]);
      }
    });
  }

  it('has the same Forgejo and Gitea workflow but for the runner label and the forge', () => {
    const strip = (f: string) => readFileSync(join(TEMPLATE, f), 'utf8').split('\n').slice(2).join('\n').replace(/runs-on: .*/, '').replace(/--comment \w+/, '');
    expect(strip('.gitea/workflows/ramboot.yml')).toBe(strip('.forgejo/workflows/ramboot.yml'));
    expect(strip('.gitea/workflows/ramboot-publish.yml')).toBe(strip('.forgejo/workflows/ramboot-publish.yml'));
  });
});

describe('ramboot init', () => {
  for (const distro of ['alpine', 'debian'] as const) {
    it(`scaffolds and commits the CI workflows for ${distro}, and its repository passes ramboot check`, async () => {
      const { repo, env } = await initRepo(distro);
      try {
        const tracked = execFileSync('git', ['-C', repo, 'ls-files'], { encoding: 'utf8' }).split('\n');
        for (const file of WORKFLOWS.flatMap((w) => [w.file, w.file.replace('ramboot.yml', 'ramboot-publish.yml')])) {
          expect(tracked).toContain(file);
          expect(readFileSync(join(repo, file), 'utf8')).toBe(readFileSync(join(TEMPLATE, file), 'utf8'));
        }
        const r = await ramboot(['check', '--repo', repo], { ...env, HOME: join(work, 'no-keys') });
        expect(r.stdout).toMatch(/^ok: /);
        expect(r.exitCode).toBe(0);
      } finally {
        rmSync(dirname(repo), { recursive: true, force: true });
      }
    });
  }
});
