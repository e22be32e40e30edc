#!/bin/sh
# Runs inside the new root (chroot) after packages and root/ are in place.
# Any failing command fails the build.
set -eu

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Keep only the kernel modules /etc/modules needs (with their dependencies):
#    the whole set is ~400 MB, and every byte of the image lives in RAM.
say 'trimming kernel modules'
kver=$(ls /lib/modules)
keep=$(grep -v '^#' /etc/modules | xargs modprobe -S "$kver" --show-depends -a 2>/dev/null \
	| awk '$1 == "insmod" { print $2 }' | sort -u)
find "/lib/modules/$kver/kernel" -name '*.ko' | sort | while read -r ko; do
	echo "$keep" | grep -qxF "$ko" || rm -f "$ko"
done
find "/lib/modules/$kver/kernel" -depth -type d -empty -delete
depmod "$kver"

# 2. Services: the status page in default; sshd is enabled by its package.
say 'enabling services'
rc-update add monitor default

# 3. The boot medium's mount point (fstab): deploy writes images there.
mkdir -p /media/usb

# 4. No passwords: root logs in with the key in the authorized_keys secret.
passwd -l root >/dev/null
