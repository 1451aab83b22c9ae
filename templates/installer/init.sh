#!/kiln/busybox sh
# kiln's installer: /init of the installer's initramfs (Debian's initramfs for the kernel's
# modules and udev, with this script and a static busybox added by kiln).
#
# It finds the kiln install medium (an ISO 9660 file system holding kiln/nodes), picks the
# node by a MAC address of this machine (or asks, when several nodes match none), finds
# the install disk by the node's rule, writes the node's disk image to it, reads it back
# against the image's sha256, and reboots. It refuses to write when the rule matches no
# disk or more than one, listing the disks it saw.
#
# kiln/nodes lines: NAME MAC RULE SIZE SHA256 DISK_GUID
# kiln/images/NAME.map lines: "D OFFSET LENGTH" (LENGTH MiB copied from NAME.data, in
# order) or "Z OFFSET LENGTH" (LENGTH MiB of zeros), OFFSET in MiB on the disk.
# shellcheck shell=sh disable=SC3036,SC3045

/kiln/busybox mkdir -p /kiln/bin
/kiln/busybox --install -s /kiln/bin
export PATH=/kiln/bin:/usr/sbin:/usr/bin:/sbin:/bin

mkdir -p /proc /sys /dev /run /tmp /medium
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts

say() {
    echo "kiln-installer: $*"
}

# Stop: say why, then leave a shell on the console for the admin.
give_up() {
    say "$*"
    echo "kiln: install failed: $*"
    say "a shell follows; power off with: poweroff -f"
    exec sh </dev/console >/dev/console 2>&1
}

say "starting"
udevd=/usr/lib/systemd/systemd-udevd
[ -x "$udevd" ] || udevd=/lib/systemd/systemd-udevd
"$udevd" --daemon --resolve-names=never
udevadm trigger --type=subsystems --action=add
udevadm trigger --type=devices --action=add
udevadm settle --timeout=60 || true
modprobe isofs 2>/dev/null || true

# The medium: the device holding an ISO 9660 file system with kiln/nodes. A USB stick
# appears a moment after the bus settles: look for up to 30 seconds.
medium=""
tries=0
while [ -z "$medium" ] && [ "$tries" -lt 30 ]; do
    for device in /dev/sr* /dev/sd* /dev/vd* /dev/nvme*n*; do
        [ -b "$device" ] || continue
        if mount -t iso9660 -o ro "$device" /medium 2>/dev/null; then
            if [ -f /medium/kiln/nodes ]; then
                medium=$device
                break
            fi
            umount /medium
        fi
    done
    if [ -z "$medium" ]; then
        sleep 1
        udevadm settle --timeout=10 || true
        tries=$((tries + 1))
    fi
done
[ -n "$medium" ] || give_up "no kiln install medium found (an ISO 9660 file system with kiln/nodes)"
medium_disk=$(basename "$(readlink -f "/sys/class/block/$(basename "$medium")/..")")
[ -e "/sys/block/$(basename "$medium")" ] && medium_disk=$(basename "$medium")
say "install medium $medium"

# The node: by MAC address, else the only one, else ask.
macs=$(cat /sys/class/net/*/address 2>/dev/null)
node=""
while read -r name mac rule size sha256 guid; do
    for own in $macs; do
        [ "$own" = "$mac" ] && node=$name
    done
done </medium/kiln/nodes
count=$(grep -c . /medium/kiln/nodes)
if [ -z "$node" ] && [ "$count" -eq 1 ]; then
    node=$(awk '{ print $1 }' /medium/kiln/nodes)
    say "no MAC address of this machine ($(echo "$macs" | tr '\n' ' ')) is node $node's; installing it anyway, the only node on this medium"
fi
if [ -z "$node" ]; then
    say "no node on this medium has a MAC address of this machine ($(echo "$macs" | tr '\n' ' '))"
    awk '{ printf "  %d) %s (%s)\n", NR, $1, $2 }' /medium/kiln/nodes
    printf 'kiln-installer: install which node? [1-%s] ' "$count"
    read -r choice </dev/console
    node=$(awk -v n="$choice" 'NR == n { print $1 }' /medium/kiln/nodes)
    [ -n "$node" ] || give_up "no node number $choice"
fi
read -r _ _ rule size sha256 guid <<EOF
$(awk -v n="$node" '$1 == n' /medium/kiln/nodes)
EOF
say "node $node: install disk rule '$rule', image $size bytes, sha256 $sha256"

# The disks: whole disks other than the medium, with size, removability, model and serial.
disks=/tmp/disks
: >"$disks"
for entry in /sys/block/*; do
    disk=$(basename "$entry")
    case $disk in loop* | ram* | sr* | zram* | dm-* | md* | fd*) continue ;; esac
    [ "$disk" = "$medium_disk" ] && continue
    sectors=$(cat "$entry/size")
    [ "$sectors" -gt 0 ] || continue
    removable=$(cat "$entry/removable" 2>/dev/null || echo 0)
    model=$(tr -d ' ' <"$entry/device/model" 2>/dev/null || echo -)
    serial=$(udevadm info --query=property --name="/dev/$disk" | awk -F= '$1 == "ID_SERIAL_SHORT" { print $2 }')
    [ -n "$serial" ] || serial=$(cat "$entry/serial" "$entry/device/serial" 2>/dev/null | head -n 1 | tr -d ' ')
    echo "$disk $((sectors * 512)) $removable ${model:--} ${serial:--}" >>"$disks"
done

seen() {
    say "disks seen (name, bytes, removable, model, serial):"
    awk '{ print "  /dev/" $0 }' "$disks"
}

case $rule in
largest)
    max=$(awk '$3 == 0 { print $2 }' "$disks" | sort -n | tail -n 1)
    matches=$(awk -v max="${max:-0}" '$3 == 0 && $2 == max { print $1 }' "$disks")
    ;;
serial:*)
    matches=$(awk -v s="${rule#serial:}" '$5 == s { print $1 }' "$disks")
    ;;
/dev/*)
    target=$(readlink -f "$rule" 2>/dev/null)
    matches=$(awk -v t="${target#/dev/}" '$1 == t { print $1 }' "$disks")
    ;;
*)
    give_up "unknown install disk rule '$rule'"
    ;;
esac
found=$(echo "$matches" | grep -c .)
if [ "$found" -ne 1 ]; then
    seen
    if [ "$found" -eq 0 ]; then
        give_up "refusing to install $node: rule '$rule' matches no disk"
    fi
    give_up "refusing to install $node: rule '$rule' matches $found disks ($(echo "$matches" | tr '\n' ' '))"
fi
target=/dev/$matches
capacity=$(awk -v d="$matches" '$1 == d { print $2 }' "$disks")
[ "$capacity" -ge "$size" ] || give_up "refusing to install $node: $target has $capacity bytes, the image needs $size"

# A disk that already carries this image (its GPT's disk GUID, which growpart keeps) is not
# written again: the machine booted the installer by mistake.
current=$(dd if="$target" bs=1 skip=568 count=16 2>/dev/null | od -An -tx1 | tr -d ' \n')
if [ "$current" = "$guid" ]; then
    say "$target already holds $node's image; remove the install medium and reboot"
    echo "kiln: node $node already installed on $target"
    poweroff -f
fi

say "writing $node to $target"
data=/medium/kiln/images/$node.data
position=0
while read -r kind offset length; do
    if [ "$kind" = D ]; then
        dd if="$data" of="$target" bs=1M skip="$position" seek="$offset" count="$length" conv=notrunc 2>/dev/null ||
            give_up "writing $target failed at MiB $offset"
        position=$((position + length))
    else
        dd if=/dev/zero of="$target" bs=1M seek="$offset" count="$length" conv=notrunc 2>/dev/null ||
            give_up "writing $target failed at MiB $offset"
    fi
done <"/medium/kiln/images/$node.map"
sync
echo 3 >/proc/sys/vm/drop_caches

say "reading $target back"
written=$(dd if="$target" bs=1M count=$((size / 1048576)) 2>/dev/null | sha256sum | awk '{ print $1 }')
[ "$written" = "$sha256" ] || give_up "read-back of $target has sha256 $written, the image $sha256"
echo "kiln: installed node $node on $target, sha256 verified"
umount /medium
sync
say "rebooting"
reboot -f
