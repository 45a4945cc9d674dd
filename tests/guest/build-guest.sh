#!/bin/sh
# tests/guest/build-guest.sh OUTDIR — build the tiny Linux guest the VM tests
# boot under QEMU (tests/integration/vm.py):
#   OUTDIR/vmlinuz       the host's newest /boot/vmlinuz-* (BLOCKD_GUEST_KERNEL
#                        names another one)
#   OUTDIR/initramfs.gz  busybox, the virtio/ext4 modules (with their
#                        dependencies, in load order) and our /init
#   OUTDIR/rootfs.ext4   a 64 MiB ext4 image holding a busybox root, to copy
#                        into a volume and boot from (blockd.root=SERIAL)
# Needs no privileges beyond reading the kernel: no mount, loop or chroot
# (mke2fs -d fills the image from a directory).  Does nothing when OUTDIR is
# up to date with its inputs.  Exit 77 (with the reason on the last line)
# when the kernel, its modules or a static busybox are missing.
set -e
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUT=$1
SRC=$(cd "$(dirname "$0")" && pwd)
skip () { echo "skipped: $*"; exit 77; }

# the kernel: newest by version, unless named
if [ -n "$BLOCKD_GUEST_KERNEL" ]; then
    KERNEL=$BLOCKD_GUEST_KERNEL
else
    KERNEL=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
fi
[ -n "$KERNEL" ] || skip "no kernel in /boot (install linux-image-amd64)"
[ -r "$KERNEL" ] || skip "kernel $KERNEL is not readable"
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || skip "no modules for kernel $KVER in $MODDIR"

BUSYBOX=
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then BUSYBOX=$b; break; fi
done
[ -n "$BUSYBOX" ] || skip "no static busybox (install busybox-static)"
for c in mke2fs cpio gzip; do
    command -v $c >/dev/null 2>&1 || skip "$c is not installed (e2fsprogs, cpio, gzip)"
done

# Modules the guest loads, in this order, each after its dependencies.
# crc32c_generic: ext4 and jbd2 need the "crc32c" hash (a softdep, which
# modules.dep does not list).  Built-in ones are left out.
WANT="crc32c_generic virtio_pci virtio_blk ext4"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>"$OUT/.lock"
flock 9 2>/dev/null || true     # two tests building at once take turns

# Up to date when nothing that goes into the guest changed.
stamp=$( { echo "$KERNEL"; ls -lL --time-style=+%s "$KERNEL" "$BUSYBOX" "$MODDIR/modules.dep";
           cat "$SRC/build-guest.sh" "$SRC/init" "$SRC/rcS" "$SRC/inittab" "$SRC/vm-agent" \
               "$SRC/disk-by-serial"; echo "$WANT"; } | cksum)
if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.gz" ] && [ -f "$OUT/rootfs.ext4" ] \
   && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "build-guest: $OUT is up to date"
    exit 0
fi
echo "build-guest: kernel $KERNEL, busybox $BUSYBOX, into $OUT"

W=$OUT/.work
rm -rf "$W"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT

# modules_in_order: the .ko paths (relative to MODDIR) to load, deps first.
# modules.dep lists a module's dependencies so that loading them from last
# to first works (modprobe does so); we recurse to be safe and drop repeats.
modules_in_order () {
    awk -v want="$WANT" -v builtin="$MODDIR/modules.builtin" '
        function base(p) { sub(/.*\//, "", p); sub(/\.ko(\..*)?$/, "", p); gsub(/-/, "_", p); return p }
        function add(name,   i, n, d) {
            if (name in done) return
            done[name] = 1
            if (!(name in path)) {
                if (name in isbuiltin) return
                print "build-guest: module " name " not found in modules.dep" > "/dev/stderr"
                failed = 1; return
            }
            n = split(deps[name], d, " ")
            for (i = n; i >= 1; i--) add(base(d[i]))
            print path[name]
        }
        FNR == 1 { file++ }
        file == 1 { isbuiltin[base($0)] = 1; next }
        {
            p = $1; sub(/:$/, "", p); name = base(p)
            path[name] = p; $1 = ""; deps[name] = $0
        }
        END {
            n = split(want, w, " ")
            for (i = 1; i <= n; i++) add(w[i])
            exit failed
        }' "$MODDIR/modules.builtin" "$MODDIR/modules.dep"
}
MODS=$(modules_in_order)
for m in $MODS; do
    case $m in *.ko) ;; *) echo "build-guest: $m is compressed; busybox insmod needs plain .ko" >&2; exit 1 ;; esac
done

# busybox_tree DIR: busybox, a symlink per applet, the directories a root needs
busybox_tree () {
    mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin" "$1/proc" "$1/sys" "$1/dev" \
             "$1/tmp" "$1/run" "$1/mnt" "$1/root" "$1/etc/init.d" "$1/newroot"
    cp "$BUSYBOX" "$1/bin/busybox"
    for a in $("$BUSYBOX" --list-full); do
        [ -e "$1/$a" ] || ln -s /bin/busybox "$1/$a"
    done
    install -m 0755 "$SRC/vm-agent" "$1/sbin/vm-agent"
    install -m 0755 "$SRC/disk-by-serial" "$1/bin/disk-by-serial"
    install -m 0755 "$SRC/rcS" "$1/etc/init.d/rcS"
    install -m 0644 "$SRC/inittab" "$1/etc/inittab"
    echo "root:x:0:0:root:/root:/bin/sh" >"$1/etc/passwd"
    echo "root:x:0:" >"$1/etc/group"
    : >"$1/etc/fstab"
    chmod 1777 "$1/tmp"
}

# initramfs: /init sets up and either switches to the root disk or execs
# busybox init right here
I=$W/initramfs
busybox_tree "$I"
install -m 0755 "$SRC/init" "$I/init"
mkdir -p "$I/lib/modules"
: >"$I/etc/modules"
for m in $MODS; do
    cp "$MODDIR/$m" "$I/lib/modules/"
    basename "$m" >>"$I/etc/modules"
done
echo "initramfs" >"$I/etc/guest-root"
(cd "$I" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$W/initramfs.gz"

# rootfs: the same busybox root, with init = busybox init (our inittab/rcS)
R=$W/rootfs
busybox_tree "$R"
rmdir "$R/newroot"
ln -sf /bin/busybox "$R/sbin/init"
echo "disk" >"$R/etc/guest-root"
mkdir -p "$R/data"
# lazy_*_init=0: the image is fully initialised here, so the guest's kernel
# does not start writing inode tables after it mounts the volume
rm -f "$W/rootfs.ext4"
mke2fs -q -t ext4 -L blockd-root -d "$R" -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 \
    "$W/rootfs.ext4" 64M

cp "$KERNEL" "$W/vmlinuz"
for f in vmlinuz initramfs.gz rootfs.ext4; do mv -f "$W/$f" "$OUT/$f"; done
echo "$stamp" >"$OUT/.stamp"
echo "build-guest: done ($(echo "$MODS" | wc -w) modules: $(for m in $MODS; do basename "$m" .ko; done | tr '\n' ' '))"
