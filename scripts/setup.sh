#!/bin/sh
# Installs what ramboot needs on Debian 12 (as root), then builds ramboot itself.
# Safe to run again: it installs only what is missing.
set -eu

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Debian packages: qemu and syslinux for the virtual NAS, OVMF, systemd-boot and
#    gdisk for its UEFI disks (a GPT with an EFI system partition), mmdebstrap and
#    apk's needs for builds, bubblewrap for the sandbox the repository's code runs in,
#    age and OpenSSH for secrets and deploy, Go for bins/; for the tests, Chromium (the
#    status page), Prometheus' text parser (/metrics), openssl (signed apk
#    repositories, password hashes), binutils (objcopy makes a unified kernel image)
#    systemd (systemd-analyze verifies the service unit; a container may lack it),
#    docker-registry (the OCI registry images are published to), swtpm (the virtual
#    NAS's TPM), tpm2-tools (the tests seal and unseal against it on this host), and
#    musl-gcc, meson, xz and the kernel's headers (the Alpine tests compile openrc and
#    OpenSSH for musl), kmod (depmod for their kernel's modules).
PACKAGES="qemu-system-x86 qemu-utils syslinux syslinux-common extlinux mtools dosfstools
ovmf systemd-boot-efi gdisk
mmdebstrap cpio zstd age openssh-server openssh-client linux-image-cloud-amd64
golang-go git busybox-static attr ca-certificates iproute2 util-linux bubblewrap
chromium python3-prometheus-client openssl binutils systemd docker-registry
swtpm tpm2-tools
gcc make musl-tools meson ninja-build linux-libc-dev xz-utils kmod"
missing=""
for p in $PACKAGES; do
	dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	say "installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. Node dependencies and the compiled CLI.
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
	say 'installing node modules (npm ci)'
	npm ci --no-audit --no-fund --loglevel=error
fi
# Compiled again only when a source changed since: a second run (the README's first
# command, run again) rewrites nothing under dist/ that a running ramboot reads.
stamp=dist/.compiled
if [ ! -f "$stamp" ] || [ -n "$(find controller builder image deploy secrets vm lib plan tsconfig.json package-lock.json -newer "$stamp" -print 2>/dev/null | head -n 1)" ]; then
	say 'compiling ramboot'
	npx tsc -p tsconfig.json
	touch "$stamp"
fi
