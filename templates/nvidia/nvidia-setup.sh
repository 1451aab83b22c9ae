#!/bin/bash
# NVIDIA driver setup of {{ node.name }}, rendered by kiln: installs the {{ node.gpu.driver }}
# driver from the packages the node carries, loads the module and checks it with nvidia-smi.
# Exit 0: driver working. Exit 3: skipped (no GPU, and the profile marks it optional).
# The last line printed is the reason shown in the first-boot marker.
set -euo pipefail

driver={{ node.gpu.driver | sh }}
optional={{ node.gpu.optional | sh }}
packages=/var/lib/kiln/bundle/nvidia

has_nvidia_gpu() {
    local vendor class
    for vendor in /sys/bus/pci/devices/*/vendor; do
        [[ -r $vendor ]] || continue
        [[ $(<"$vendor") == 0x10de ]] || continue
        class=$(<"${vendor%/vendor}/class")
        # 0x03xxxx: display controllers (VGA and 3D controllers such as data-centre GPUs).
        [[ $class == 0x03* ]] && return 0
    done
    return 1
}

if ! has_nvidia_gpu; then
    if [[ $optional == true ]]; then
        echo "no NVIDIA GPU on the PCI bus (gpu.optional = true)"
        exit 3
    fi
    echo "no NVIDIA GPU on the PCI bus"
    exit 1
fi

if ! modinfo nvidia >/dev/null 2>&1 || ! command -v nvidia-smi >/dev/null 2>&1; then
    shopt -s nullglob
    debs=("$packages"/*.deb)
    if [[ -z ${debs[*]:-} ]]; then
        echo "driver $driver is not installed and $packages holds no packages"
        exit 1
    fi
    # Local files only: the node has no route to an archive.
    DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-download --no-install-recommends "${debs[@]}"
fi

modprobe nvidia
gpus=$(nvidia-smi --list-gpus | grep -c '^GPU ' || true)
if ((gpus == 0)); then
    echo "nvidia-smi lists no GPU with driver $driver"
    exit 1
fi
echo "driver $driver loaded, nvidia-smi lists $gpus GPU(s)"
