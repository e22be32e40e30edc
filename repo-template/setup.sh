#!/bin/sh
# Runs as root after packages and root/ are in place, in a bubblewrap sandbox whose /
# is the new root: a fresh /proc, a minimal /dev, no /sys, none of the build host's
# files, processes or environment, and no network unless ramboot.yaml says
# build: { network: true }. Any failing command fails the build.
set -eu

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. openrc-init is PID 1: the kernel runs /init from the initramfs.
say 'linking /init to openrc-init'
ln -sf /sbin/openrc-init /init

# 2. Login prompts on the serial console and the screen, for when the network is down:
#    openrc's agetty service runs one per link named after its port.
say 'adding login prompts on ttyS0 and tty1'
for tty in ttyS0 tty1; do ln -sf agetty "/etc/init.d/agetty.$tty"; done

# 3. Runlevels, as on the reference NAS: the wait for the boot medium, which no initramfs
#    does here (medium, root/etc/init.d), the RNG seed kept on the medium (seedrng,
#    conf.d/seedrng), kernel messages in the log (klogd), the clock from NTP (busybox
#    ntpd), /etc/local.d (local), and the console password from its secret (passwords).
say 'adding services to runlevels'
for s in devfs dmesg mdev hwdrivers medium; do rc-update add "$s" sysinit; done
for s in modules sysctl hostname bootmisc syslog klogd networking hwclock localmount seedrng acpid passwords; do rc-update add "$s" boot; done
for s in sshd crond ntpd local monitor agetty.ttyS0 agetty.tty1; do rc-update add "$s" default; done
for s in mount-ro killprocs savecache; do rc-update add "$s" shutdown; done

# 4. Over SSH root logs in with the key in the authorized_keys secret, never a password.
#    The console password is locked here; at boot the passwords service sets it from the
#    secret secrets/etc/ramboot/passwords/root.age (`ramboot init` makes one).
passwd -l root >/dev/null
