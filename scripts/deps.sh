#!/bin/bash
# Install what kiln's demo job and tests need on Debian/Ubuntu (sourced by scripts/demo and
# scripts/test). Installs only what is missing; uses sudo when not root.
set -euo pipefail

kiln_sudo() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

# apt_install PACKAGE... : install the packages that are not installed yet.
apt_install() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [[ -n ${missing[*]:-} ]]; then
        echo "kiln: installing ${missing[*]}" >&2
        kiln_sudo apt-get update -qq
        kiln_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# A Rust toolchain new enough for kiln (1.89).
need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        apt_install cargo rustc
    fi
    local version
    version=$(cargo --version | awk '{ print $2 }')
    if [[ $(printf '%s\n1.89.0\n' "$version" | sort -V | head -n 1) != 1.89.0 ]]; then
        echo "kiln: cargo $version is older than 1.89; install a current toolchain with rustup (https://rustup.rs)" >&2
        exit 2
    fi
}

# What `kiln build disk` and the boot tests run: mmdebstrap, apt-ftparchive, e2fsprogs,
# dosfstools, mtools, sgdisk, systemd's UEFI stub, OVMF and QEMU.
image_tools() {
    apt_install mmdebstrap apt-utils e2fsprogs dosfstools mtools gdisk systemd-boot-efi ovmf xorriso ipxe-qemu seabios
    if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
        # qemu-utils and qemu-system-x86 must come from the same release: a newer qemu-utils
        # (from backports, say) makes apt refuse qemu-system-x86, so pin both to its version.
        kiln_sudo apt-get update -qq
        local version
        version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
        echo "kiln: installing qemu-system-x86 and qemu-utils $version" >&2
        kiln_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            --allow-downgrades qemu-system-x86 "qemu-utils=$version" >/dev/null
    fi
}
