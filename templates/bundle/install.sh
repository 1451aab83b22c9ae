#!/bin/bash
# Install a node of cluster {{ cluster.name }} from this unpacked kiln bundle, on an
# existing Ubuntu (or Debian) machine. Rendered by kiln.
#
#   ./install.sh [--node NAME] [--secrets DIR] [--root DIR] [--dry-run]
#
# --node     the node to install (default: the node whose MAC address this machine has)
# --secrets  a directory with one file per secret, named after it (e.g. DIR/microk8s-join-token)
# --root     install into this directory instead of / (an image being prepared); the
#            first-boot program then runs at that system's first boot
# --dry-run  print each command instead of running it
#
# Steps: check every checksum; check the node's secrets are given; stage the bundle's
# images, charts, snaps and driver packages in /var/lib/kiln/bundle; place the node's
# configuration (secrets filled in, root-only where they appear); run kiln's first-boot
# program, whose stages install MicroK8s from the bundled snaps, sideload the images,
# install the NVIDIA driver on GPU nodes, join the cluster and, on the first control plane,
# install the Helm releases from the bundled charts. Every step can run again.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
node=""
secrets=""
root=""
dry_run=false

while [[ $# -gt 0 ]]; do
    case $1 in
    --node) node=$2; shift 2 ;;
    --secrets) secrets=$2; shift 2 ;;
    --root) root=${2%/}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# run COMMAND...: run it, or print it with --dry-run.
run() {
    if [[ $dry_run == true ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# Nodes of this bundle: name and MAC address.
declare -A macs=(
{%- for node in nodes %}
    [{{ node.name | sh }}]={{ node.mac | sh }}
{%- endfor %}
)
# Secrets each node's files need.
declare -A needs=(
{%- for node in nodes %}
    [{{ node.name | sh }}]={{ node.secrets | join(sep=" ") | sh }}
{%- endfor %}
)

echo "kiln: checking the bundle's checksums"
(cd "$here" && run sha256sum --check --strict --quiet SHA256SUMS)

if [[ -z $node ]]; then
    for candidate in "${!macs[@]}"; do
        if grep -qix "${macs[$candidate]}" /sys/class/net/*/address 2>/dev/null; then
            node=$candidate
        fi
    done
    if [[ -z $node ]]; then
        echo "install.sh: no node of this bundle has a MAC address of this machine; give --node NAME (nodes: ${!macs[*]})" >&2
        exit 2
    fi
fi
if [[ -z ${macs[$node]+set} ]]; then
    echo "install.sh: no node named $node in this bundle (nodes: ${!macs[*]})" >&2
    exit 2
fi
echo "kiln: installing node $node"

missing=()
for name in ${needs[$node]}; do
    [[ -n $secrets && -f $secrets/$name ]] || missing+=("$name")
done
if [[ ${missing[*]:-} ]]; then
    echo "install.sh: node $node needs these secrets, one file each in the --secrets directory: ${missing[*]}" >&2
    exit 2
fi

echo "kiln: staging images, charts, snaps, driver packages and files in $root/var/lib/kiln/bundle"
for kind in images charts snaps nvidia files; do
    run install -d -m 0755 "$root/var/lib/kiln/bundle/$kind"
    if [[ -d $here/$kind ]]; then
        for file in "$here/$kind"/*; do
            [[ -e $file ]] || continue
            run install -m 0644 "$file" "$root/var/lib/kiln/bundle/$kind/"
        done
    fi
done

echo "kiln: placing the configuration of $node"
while IFS=' ' read -r mode path; do
    target=$root/${path#root/}
    run install -D -m "$mode" "$here/nodes/$node/$path" "$target"
    for name in ${needs[$node]}; do
        if grep -qF "@@kiln-secret:$name@@" "$here/nodes/$node/$path"; then
            # perl-base is essential on Debian and Ubuntu; the value is read from its file,
            # never put on a command line. The single quotes are perl's, not the shell's.
            # shellcheck disable=SC2016
            run env KILN_SECRET_VALUE_FILE="$secrets/$name" perl -0pi -e \
                'BEGIN { local $/; open my $f, "<", $ENV{KILN_SECRET_VALUE_FILE} or die; $v = <$f>; $v =~ s/\n\z//; } s/\@\@kiln-secret:'"$name"'\@\@/$v/g' \
                "$target"
        fi
    done
done < "$here/nodes/$node/FILES"

if [[ $dry_run == true ]]; then
    stages=$(sed -n 's/^stages=(\(.*\))$/\1/p' "$here/nodes/$node/root/usr/lib/kiln/firstboot")
    echo "kiln: the first-boot program runs these stages, each once: ${stages:-none}"
fi
if [[ -n $root ]]; then
    echo "kiln: installed into $root; the first-boot program runs at that system's first boot"
    exit 0
fi
echo "kiln: running the first-boot program"
run systemctl daemon-reload
run systemctl enable kiln-firstboot.service
run /usr/lib/kiln/firstboot
