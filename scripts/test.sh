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
# Beside the unit and integration files, which run one at a time and leave a core mostly
# idle, the Alpine end-to-end file (one qemu process, and its compile of openrc and
# OpenSSH), then the heaviest unit files (deploy's protocol and the medium's, against a
# local sshd, and the site controller's, which waits for its 20-second looks): beside the
# Alpine compile and qemu they took twice as long, and once it ends the other unit files
# leave a core idle for minutes. Lines of the second job are
# prefixed. A failed unit or heavy file ends the run once both jobs ended; a failed Alpine
# file fails it at the end, after the other end-to-end files ran.
say 'unit and integration tests, one file at a time; beside them, the Alpine end-to-end file, then the heaviest unit files'
alpine="test/e2e/alpine.test.ts"
heavy="test/deploy/deploy.test.ts test/deploy/medium.test.ts test/controller/site.test.ts"
rc=$(mktemp)
heavy_rc=$(mktemp)
# A pipeline's status is sed's: each vitest's own goes through a file.
# shellcheck disable=SC2086
{
	{ code=0; npx vitest run $alpine 2>&1 || code=$?; echo "$code" >"$rc"; } | sed -u 's/^/[e2e alpine] /'
	{ code=0; npx vitest run $heavy 2>&1 || code=$?; echo "$code" >"$heavy_rc"; } | sed -u 's/^/[heavy] /'
} &
pid=$!
status=0
# shellcheck disable=SC2086
npx vitest run --exclude 'test/e2e/**' $(for f in $heavy; do printf -- '--exclude %s ' "$f"; done) || status=$?
wait $pid
alpine_status=$(cat "$rc")
heavy_status=$(cat "$heavy_rc")
rm -f "$rc" "$heavy_rc"
[ "$status" = 0 ] || exit 1
[ "$heavy_status" = 0 ] || { say 'a heavy unit file failed (its lines are prefixed [heavy])'; exit 1; }
# Each other end-to-end file boots its own virtual NAS (the fleet file two, one after the
# other, then a third), a qemu process that keeps a core busy: two lists run side by
# side, one file at a time each, balanced by their times in a fresh-clone run (deploy
# 17.1 + deploy-interrupted 12.7 + tpm 5.7 + the README's first command 1.8 = 37.4 min;
# controller 14.2 + uefi 14.4 + fleet 8.8 + adopt 2.4 = 39.8 min, and any new file). The README's
# command reruns setup.sh, which compiles nothing when dist/ is up to date, and binds the
# default ports, which no other file uses. Lines of the first list are prefixed.
say 'end-to-end tests on the virtual NAS, two lists side by side'
first="test/e2e/deploy.test.ts test/e2e/deploy-interrupted.test.ts test/e2e/tpm.test.ts test/e2e/readme.test.ts"
second=$(ls test/e2e/*.test.ts | grep -v -x -e $alpine $(for f in $first; do printf -- '-e %s ' "$f"; done) || true)
# An empty list would make vitest run every test file.
[ -n "$second" ] || { say 'no end-to-end file left for the second list'; exit 1; }
rc=$(mktemp)
# shellcheck disable=SC2086
{ code=0; npx vitest run $first 2>&1 || code=$?; echo "$code" >"$rc"; } | sed -u 's/^/[e2e 1] /' &
pid=$!
status=0
# shellcheck disable=SC2086
npx vitest run $second || status=$?
wait $pid
[ "$(cat "$rc")" = 0 ] || status=1
rm -f "$rc"
[ "$alpine_status" = 0 ] || { say "the Alpine end-to-end file failed (its lines are prefixed [e2e alpine])"; status=1; }
exit $status
