#!/bin/bash
# kiln first-boot program of node {{ node.name }} (cluster {{ cluster.name }}), rendered by kiln.
#
# Stages run in order. Each runs once: its outcome is journaled in /var/lib/kiln/stages/NAME
# ("STATE SECONDS REASON") and printed on the console as
#   kiln: stage NAME ok|skip|fail: REASON
# A failed stage stops the sequence; the unit runs again at the next boot and resumes there.
# Only what the node's OS ships is used here: no kiln binary on the node.
set -euo pipefail
export PATH=$PATH:/snap/bin

readonly journal=/var/lib/kiln/stages
{%- if node.containerd or node.kubernetes %}
readonly bundle=/var/lib/kiln/bundle
{%- endif %}
readonly node={{ node.name | sh }}
mkdir -p "$journal"

say() {
    echo "kiln: $*"
}

# Retry COMMAND with exponential backoff (2 s doubling to 60 s) for up to LIMIT seconds.
retry() {
    local limit=$1 delay=2 started
    shift
    started=$(date +%s)
    until "$@"; do
        if (($(date +%s) - started >= limit)); then
            return 1
        fi
        sleep "$delay"
        delay=$((delay * 2 > 60 ? 60 : delay * 2))
    done
}

# Does a DNS server answer a query over UDP? Sends a query for the root zone's NS records
# (ID 0x6b6e) and waits for any reply, using only bash.
dns_answers() {
    local server=$1 reply=""
    exec 3<>"/dev/udp/$server/53" || return 1
    printf '\x6b\x6e\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01' >&3
    read -r -t 3 -N 2 reply <&3 || true
    exec 3<&- 3>&-
    [[ $reply == kn ]]
}

stage_network() {
    local servers=({% for server in node.dns.servers %}{{ server | sh }}{% if not loop.last %} {% endif %}{% endfor %})
    local server search domain missing=()
    for server in "${servers[@]}"; do
        if ! retry 30 dns_answers "$server"; then
            echo "DNS server $server does not answer"
            return 1
        fi
    done
{%- if node.dns.search %}
    local domains=({% for domain in node.dns.search %}{{ domain | sh }}{% if not loop.last %} {% endif %}{% endfor %})
    search=$(awk '$1 == "search" { $1 = ""; print }' /etc/resolv.conf)
    for domain in "${domains[@]}"; do
        [[ " $search " == *" $domain "* ]] || missing+=("$domain")
    done
    if [[ -n ${missing[*]:-} ]]; then
        echo "search domain ${missing[*]} missing from /etc/resolv.conf (search:${search:- none})"
        return 1
    fi
{%- endif %}
    echo "{{ node.dns.servers | length }} DNS server(s) answer{% if node.dns.search %}, search {{ node.dns.search | join(sep=" ") }}{% endif %}"
}
{%- if node.gpu %}

stage_nvidia() {
    /usr/lib/kiln/nvidia-setup
}
{%- endif %}
{%- if node.nfs_server %}

# Is PATH in the kernel's export table? `exportfs -v` prints PATH padded to 14 columns and then
# the client, but a longer PATH alone on its line, so PATH must match a whole leading field.
# awk reads all of the output, so exportfs never dies of SIGPIPE under pipefail.
exported() {
    local path=$1
    exportfs -v | path=$path awk '
        { p = ENVIRON["path"] }
        index($0, p) == 1 && (length($0) == length(p) || substr($0, length(p) + 1, 1) ~ /[[:space:]]/) { found = 1 }
        END { exit !found }'
}

stage_nfs_server() {
    mkdir -p {{ nfs.export | sh }}
    systemctl enable --now nfs-server.service
    exportfs -ra
    if ! exported {{ nfs.export | sh }}; then
        echo "{{ nfs.export }} is not in exportfs -v"
        return 1
    fi
    echo "exporting {{ nfs.export }} to {{ nfs.clients | join(sep=" ") }}"
}
{%- endif %}
{%- if node.nfs_client %}

nfs_test_mount() {
    local target
    target=$(mktemp -d)
    if mount -t nfs -o {{ nfs.mount_options | join(sep=",") | sh }} {{ nfs.server.ip ~ ":" ~ nfs.export | sh }} "$target"; then
        umount "$target"
        rmdir "$target"
        return 0
    fi
    rmdir "$target"
    return 1
}

stage_nfs_client() {
    # The server may still be booting: retry for up to 10 minutes.
    if ! retry 600 nfs_test_mount; then
        echo "cannot mount {{ nfs.server.ip }}:{{ nfs.export }} from {{ nfs.server.name }}"
        return 1
    fi
{%- if nfs.mount_point %}
    mkdir -p {{ nfs.mount_point | sh }}
    systemctl enable --now {{ nfs.mount_unit | sh }}
{%- endif %}
    echo "mounted {{ nfs.server.ip }}:{{ nfs.export }}{% if nfs.mount_point %} on {{ nfs.mount_point }}{% endif %}"
}
{%- endif %}
{%- if node.containerd %}

stage_containerd() {
    systemctl enable containerd.service
    systemctl restart containerd.service
    retry 60 ctr version >/dev/null
    echo "containerd $(ctr version | awk '/Version:/ { print $2; exit }') running"
}

stage_images() {
    local archive count=0
    shopt -s nullglob
    for archive in "$bundle"/images/*.tar; do
        ctr --namespace k8s.io images import --all-platforms "$archive" >/dev/null
        count=$((count + 1))
    done
    if ((count == 0)); then
        echo "no image archives in $bundle/images"
        return 3
    fi
    echo "imported $count image archive(s) into containerd"
}
{%- endif %}
{%- if node.kubernetes %}

stage_images() {
    # MicroK8s' install hook copies these into its sideload directory; containerd imports
    # them into namespace k8s.io on start.
    local sideload=/var/snap/microk8s/common/sideload count=0 archive
    mkdir -p "$sideload"
    shopt -s nullglob
    for archive in "$bundle"/images/*.tar; do
        cp "$archive" "$sideload/"
        count=$((count + 1))
    done
    if ((count == 0)); then
        echo "no image archives in $bundle/images"
        return 3
    fi
    echo "staged $count image archive(s) for sideloading"
}

stage_microk8s() {
    local assertion snap name
    shopt -s nullglob
    # Base snaps first, then microk8s itself (classic confinement).
    for assertion in "$bundle"/snaps/*.assert; do
        snap=${assertion%.assert}.snap
        name=$(basename "$snap" .snap)
        [[ $name == microk8s* ]] && continue
        snap ack "$assertion"
        snap install "$snap"
    done
    for assertion in "$bundle"/snaps/microk8s*.assert; do
        snap ack "$assertion"
        snap install --classic "${assertion%.assert}.snap"
    done
    if ! snap list microk8s >/dev/null 2>&1; then
        echo "no microk8s snap in $bundle/snaps"
        return 1
    fi
    microk8s status --wait-ready --timeout 600 >/dev/null
    echo "microk8s $(snap list microk8s | awk 'NR == 2 { print $2 }') ready ({{ microk8s.channel }})"
}
{%- if node.first_control_plane %}

launch_config_applied() {
    [[ -e /var/snap/microk8s/common/etc/launcher/install.yaml.applied ]]
}

stage_addons() {
    if ! retry 900 launch_config_applied; then
        echo "the launch configuration was not applied (see journalctl -u snap.microk8s.daemon-cluster-agent)"
        return 1
    fi
{%- for addon in microk8s.addons %}
{%- if addon.enabled %}
    if ! microk8s status --addon {{ addon.name | sh }} | grep -q enabled; then
        echo "addon {{ addon.name }} is not enabled"
        return 1
    fi
{%- endif %}
{%- endfor %}
{%- if microk8s.ingress_tcp %}
    microk8s kubectl apply -f /etc/kiln/manifests/20-ingress-tcp.yaml
    microk8s kubectl --namespace ingress patch daemonset nginx-ingress-microk8s-controller \
        --patch-file /etc/kiln/patches/ingress-tcp-ports.yaml
{%- endif %}
    echo "addons enabled: {% for addon in microk8s.addons %}{% if addon.enabled %}{{ addon.name }} {% endif %}{% endfor %}"
}

stage_helm() {
    local manifest
    shopt -s nullglob
    for manifest in /etc/kiln/manifests/10-*.yaml; do
        microk8s kubectl apply -f "$manifest" >/dev/null
    done
{%- for release in releases %}
    microk8s helm3 upgrade --install {{ release.name | sh }} \
        "$bundle"/charts/{{ release.chart ~ "-" ~ release.version ~ ".tgz" | sh }} \
        --namespace {{ release.namespace | sh }} --create-namespace \
        --values /etc/kiln/helm/{{ release.name ~ ".values.yaml" | sh }} \
        --wait --timeout 20m
{%- endfor %}
    for manifest in /etc/kiln/manifests/50-*.yaml; do
        microk8s kubectl apply -f "$manifest" >/dev/null
    done
    echo "{{ releases | length }} Helm release(s) installed"
}
{%- else %}

joined() {
    [[ -e /var/snap/microk8s/current/var/lock/clustered.lock ]]
}

stage_join() {
    # The launch configuration's `join` is retried by MicroK8s' cluster agent every 5 s;
    # wait for it, up to 30 minutes, and say which control plane did not answer.
    if ! retry 1800 joined; then
        if ! timeout 5 bash -c 'exec 3<>/dev/tcp/{{ microk8s.first_control_plane.ip }}/25000' 2>/dev/null; then
            echo "control plane {{ microk8s.first_control_plane.name }} ({{ microk8s.first_control_plane.ip }}:25000) does not answer"
        else
            echo "not joined yet (see journalctl -u snap.microk8s.daemon-cluster-agent)"
        fi
        return 1
    fi
    echo "joined the cluster through {{ microk8s.first_control_plane.name }} as {{ node.kubernetes }}"
}
{%- endif %}
{%- endif %}

# run_stage NAME: run stage_NAME once and journal it.
run_stage() {
    local name=$1 log started status reason seconds state
    if [[ -f $journal/$name ]] && [[ $(cut -d' ' -f1 "$journal/$name") != fail ]]; then
        say "stage $name skip: done at an earlier boot"
        return 0
    fi
    log=$journal/$name.log
    started=$(date +%s)
    set +e
    (
        set -euo pipefail
        "stage_${name//-/_}"
    ) >"$log" 2>&1
    status=$?
    set -e
    reason=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 || true)
    seconds=$(($(date +%s) - started))
    case $status in
    0) state=ok ;;
    3) state=skip ;;
    *)
        state=fail
        reason=${reason:-exit status $status}
        ;;
    esac
    reason=${reason:-done}
    printf '%s %s %s\n' "$state" "$seconds" "$reason" >"$journal/$name"
    say "stage $name $state: $reason"
    [[ $state != fail ]]
}

stages=({% for stage in stages %}{{ stage | sh }}{% if not loop.last %} {% endif %}{% endfor %})
say "first boot of node $node: stages ${stages[*]}"
for stage in "${stages[@]}"; do
    if ! run_stage "$stage"; then
        say "first boot stopped at stage $stage; it is retried at the next boot (kiln-status shows the stages)"
        exit 1
    fi
done
printf 'ok 0 ready\n' >"$journal/ready"
say "node $node ready"
