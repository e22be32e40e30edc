#!/bin/sh
# Every test: unit, integration (real sshd, age, git, builds) and end-to-end (qemu).
# With arguments, just those (e.g. `sh scripts/test.sh test/deploy`).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
if [ $# -gt 0 ]; then
	exec npx vitest run "$@"
fi
say() { printf 'test: %s\n' "$*" >&2; }
say 'type-checking the tests'
npx tsc -p tsconfig.test.json
say 'unit and integration tests, one file at a time (they share the package-stage cache and loop devices)'
npx vitest run --exclude 'test/e2e/**'
# The README's first command alone: it reruns setup.sh (rewriting dist/, which the other
# files run the CLI from) and binds the default ports 2222, 8080 and 8180.
say "end-to-end: the README's first command, alone"
npx vitest run test/e2e/readme.test.ts
# Each other end-to-end file boots its own virtual NAS, a qemu process that keeps one
# core busy: two at a time on two cores roughly halves the wall time.
say 'end-to-end tests on the virtual NAS, two files at a time'
npx vitest run test/e2e --exclude test/e2e/readme.test.ts --fileParallelism --maxWorkers 2
