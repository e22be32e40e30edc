#!/bin/sh
# Every test: unit, integration (real sshd, age, git) and end-to-end (qemu).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
npx vitest run "$@"
