#!/bin/sh
# Runs as root after packages and root/ are in place, in a bubblewrap sandbox whose /
# is the new root: a fresh /proc, a minimal /dev, no /sys, none of the build host's
# files, processes or environment, and no network unless ramboot.yaml says
# build: { network: true }. Any failing command fails the build.
set -eu

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Keep only the kernel modules /etc/modules needs (with their dependencies):
#    the whole set is ~400 MB, and every byte of the image lives in RAM.
say 'trimming kernel modules'
kver=$(ls /lib/modules)
keep=$(grep -v '^#' /etc/modules | xargs modprobe -S "$kver" --show-depends -a 2>/dev/null \
	| awk '$1 == "insmod" { print $2 }' | sort -u)
# One pass over the ~4000 modules: a grep for each took 13 s of every build.
echo "$keep" > /tmp/ramboot-modules.keep
find "/lib/modules/$kver/kernel" -name '*.ko' | grep -vxFf /tmp/ramboot-modules.keep | xargs -r rm -f
rm -f /tmp/ramboot-modules.keep
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
# A login prompt on the serial console (openrc's agetty, one link per port), for when the
# network is down; root's password comes from a secret (root/etc/init.d/passwords).
ln -sf agetty /etc/init.d/agetty.ttyS0
for s in hostname localmount networking seedrng passwords; do rc-update add "$s" boot; done
for s in sshd monitor agetty.ttyS0; do rc-update add "$s" default; done

# 3. The boot medium's mount point (fstab): deploy writes images there.
mkdir -p /media/usb

# 4. Over SSH root logs in with the key in the authorized_keys secret, never a password.
#    The console password is locked here; at boot the passwords service sets it from the
#    secret secrets/etc/ramboot/passwords/root.age, if the repository has one.
passwd -l root >/dev/null
