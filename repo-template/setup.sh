#!/bin/sh
# Runs inside the new root (chroot) after packages and root/ are in place.
# Any failing command fails the build.
set -eu

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. openrc-init is PID 1: the kernel runs /init from the initramfs.
say 'linking /init to openrc-init'
ln -sf /sbin/openrc-init /init

# 2. Runlevels, as on the reference NAS.
say 'adding services to runlevels'
for s in devfs dmesg mdev hwdrivers; do rc-update add "$s" sysinit; done
for s in modules sysctl hostname bootmisc syslog networking hwclock localmount acpid; do rc-update add "$s" boot; done
for s in sshd crond monitor; do rc-update add "$s" default; done
for s in mount-ro killprocs savecache; do rc-update add "$s" shutdown; done

# 3. No passwords: root logs in with the key in the authorized_keys secret.
passwd -l root >/dev/null
