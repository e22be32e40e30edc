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

# 2. openrc-init is PID 1 (root/init hands over to it), with openrc's own small
#    services from root/etc/init.d. Debian's sysv scripts check and clean a root file
#    system, run udev, save the clock: a machine that runs from RAM needs none of it,
#    and each costs seconds at boot and at shutdown. They go, so that openrc does not
#    even read them.
say 'replacing the sysv boot scripts with openrc services'
for s in bootlogs bootmisc.sh brightness cgroups checkfs.sh checkroot-bootclean.sh checkroot.sh \
	hostname.sh hwclock.sh killprocs kmod mount-configfs mountall-bootclean.sh mountall.sh \
	mountdevsubfs.sh mountkernfs.sh mountnfs-bootclean.sh mountnfs.sh procps \
	rc.local rmnologin savecache sendsigs single ssh udev umountfs umountnfs.sh umountroot urandom; do
	find /etc/runlevels -name "$s" -delete
	rm -f "/etc/init.d/$s"
done
# root/etc/init.d/networking replaced Debian's script of that name; its sysv link goes.
rm -f /etc/runlevels/sysinit/networking
for s in hostname localmount networking; do rc-update add "$s" boot; done
for s in sshd monitor; do rc-update add "$s" default; done

# 3. The boot medium's mount point (fstab): deploy writes images there.
mkdir -p /media/usb

# 4. No passwords: root logs in with the key in the authorized_keys secret.
passwd -l root >/dev/null
