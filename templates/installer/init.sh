#!/kiln/busybox sh
# kiln's installer: /kiln/init of the installer's initramfs, run by `rdinit=/kiln/init`
# (Debian's initramfs, kept whole for the kernel's modules, udev and its /init, with this
# script and a static busybox added by kiln).
#
# It finds the node images: on the kiln install medium (an ISO 9660 file system holding
# kiln/nodes), or, when the kernel command line has kiln.url=URL (the PXE set), at URL over
# HTTP after DHCP on the interface iPXE booted from (BOOTIF=). It picks the node
# (kiln.node=NAME, else by a MAC address of this machine, else the only one, else asks),
# finds the install disk by the node's rule, writes the node's disk image to it, reads it
# back against the image's sha256, then reboots (USB) or hands over to Debian's /init,
# which boots the installed root named by root=PARTUUID= (PXE: no second firmware POST).
# It refuses to write when the rule matches no disk or more than one, listing the disks it
# saw. A disk that already holds the node's image is not written again.
#
# nodes lines: NAME MAC RULE SIZE SHA256 DISK_GUID
# kiln/images/NAME.map lines: "D OFFSET LENGTH" (LENGTH MiB copied from NAME.data, in
# order) or "Z OFFSET LENGTH" (LENGTH MiB of zeros), OFFSET in MiB on the disk.
# shellcheck shell=sh disable=SC3036,SC3040,SC3045

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
set -o pipefail

url=""
want=""
bootif=""
read -r cmdline </proc/cmdline
for argument in $cmdline; do
    case $argument in
    kiln.url=*) url=${argument#kiln.url=} ;;
    kiln.node=*) want=${argument#kiln.node=} ;;
    BOOTIF=*) bootif=$(echo "${argument#BOOTIF=01-}" | tr '[:upper:]-' '[:lower:]:') ;;
    esac
done

# The interface to configure: the one iPXE booted from, else the first with a cable.
iface=""
network_up() {
    tries=0
    while [ -z "$iface" ] && [ "$tries" -lt 30 ]; do
        for path in /sys/class/net/*; do
            name=$(basename "$path")
            [ "$name" = lo ] && continue
            if [ -z "$bootif" ] || [ "$(cat "$path/address")" = "$bootif" ]; then
                iface=$name
                break
            fi
        done
        [ -n "$iface" ] && break
        sleep 1
        tries=$((tries + 1))
    done
    [ -n "$iface" ] || give_up "no network interface${bootif:+ with MAC address $bootif}"
    ip link set lo up
    ip link set "$iface" up
    say "asking for an address by DHCP on $iface"
    udhcpc -i "$iface" -f -q -n -t 20 -T 2 -s /kiln/udhcpc.script >/dev/null 2>&1 ||
        give_up "no DHCP answer on $iface"
    say "$iface is $(ip -4 -o addr show dev "$iface" | awk '{ print $4 }')"
}

# The kernel's command line names the source: the PXE set's URL, or the install medium.
if [ -n "$url" ]; then
    network_up
    mkdir -p /tmp/kiln
    wget -q -O /tmp/kiln/nodes "$url/nodes" || give_up "cannot fetch $url/nodes"
    nodes=/tmp/kiln/nodes
    medium=""
    medium_disk=""
    say "node images at $url"
else
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
    nodes=/medium/kiln/nodes
fi

# The node: as named, else by MAC address, else the only one, else ask.
macs=$(cat /sys/class/net/*/address 2>/dev/null)
node=""
if [ -n "$want" ]; then
    awk -v n="$want" '$1 == n { found = 1 } END { exit !found }' "$nodes" ||
        give_up "kiln.node=$want is not a node of $nodes"
    node=$want
fi
[ -n "$node" ] || while read -r name mac rule size sha256 guid; do
    for own in $macs; do
        [ "$own" = "$mac" ] && node=$name
    done
done <"$nodes"
count=$(grep -c . "$nodes")
if [ -z "$node" ] && [ "$count" -eq 1 ]; then
    node=$(awk '{ print $1 }' "$nodes")
    say "no MAC address of this machine ($(echo "$macs" | tr '\n' ' ')) is node $node's; installing it anyway, the only node on this medium"
fi
if [ -z "$node" ]; then
    say "no node on this medium has a MAC address of this machine ($(echo "$macs" | tr '\n' ' '))"
    awk '{ printf "  %d) %s (%s)\n", NR, $1, $2 }' "$nodes"
    printf 'kiln-installer: install which node? [1-%s] ' "$count"
    read -r choice </dev/console
    node=$(awk -v n="$choice" 'NR == n { print $1 }' "$nodes")
    [ -n "$node" ] || give_up "no node number $choice"
fi
read -r _ _ rule size sha256 guid <<EOF
$(awk -v n="$node" '$1 == n' "$nodes")
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
    model=$(tr -d ' ' 2>/dev/null <"$entry/device/model" || echo -)
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

# Hand over to Debian's /init, which mounts root=PARTUUID= from the command line (the
# installed root) and starts its systemd, as at any boot.
boot_installed() {
    echo "kiln: booting node $node from $target"
    # Leave the interface as the firmware left it: down, without the DHCP lease (the node
    # configures, and may rename, it at boot).
    if [ -n "$iface" ]; then
        ip -4 addr flush dev "$iface"
        ip link set "$iface" down
    fi
    udevadm control --exit 2>/dev/null || true
    umount -l /dev/pts /dev /sys /proc 2>/dev/null
    exec /init
}

if [ "$current" = "$guid" ]; then
    echo "kiln: node $node already installed on $target"
    [ -n "$url" ] && boot_installed
    say "$target already holds $node's image; remove the install medium and reboot"
    poweroff -f
fi

# stdin: the image's data; each D run takes the next LENGTH MiB of it.
write_image() {
    while read -r kind offset length <&3; do
        if [ "$kind" = D ]; then
            dd of="$target" bs=1M seek="$offset" count="$length" iflag=fullblock conv=notrunc 2>/dev/null ||
                return 1
        else
            dd if=/dev/zero of="$target" bs=1M seek="$offset" count="$length" conv=notrunc 2>/dev/null ||
                return 1
        fi
    done 3<"$1"
}

say "writing $node to $target"
if [ -n "$url" ]; then
    wget -q -O /tmp/kiln/map "$url/images/$node.map" || give_up "cannot fetch $url/images/$node.map"
    wget -q -O - "$url/images/$node.data" | write_image /tmp/kiln/map ||
        give_up "writing $target from $url/images/$node.data failed"
else
    write_image "/medium/kiln/images/$node.map" <"/medium/kiln/images/$node.data" ||
        give_up "writing $target failed"
fi
sync
echo 3 >/proc/sys/vm/drop_caches

say "reading $target back"
written=$(dd if="$target" bs=1M count=$((size / 1048576)) 2>/dev/null | sha256sum | awk '{ print $1 }')
[ "$written" = "$sha256" ] || give_up "read-back of $target has sha256 $written, the image $sha256"
echo "kiln: installed node $node on $target, sha256 verified"
[ -n "$url" ] && boot_installed
umount /medium
sync
say "rebooting"
reboot -f
