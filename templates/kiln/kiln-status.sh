#!/bin/sh
# kiln-status: the first-boot stages of {{ node.name }} and how they went (rendered by kiln).
set -eu
journal=/var/lib/kiln/stages
if [ ! -d "$journal" ]; then
    echo "kiln: first boot has not started on this node"
    exit 1
fi
printf '%-14s %-5s %8s  %s\n' STAGE STATE SECONDS REASON
for stage in {% for stage in stages %}{{ stage | sh }} {% endfor %}ready; do
    if [ -f "$journal/$stage" ]; then
        # Each journal file holds: state, seconds, reason (one line).
        IFS=' ' read -r state seconds reason < "$journal/$stage" || true
        printf '%-14s %-5s %8s  %s\n' "$stage" "$state" "$seconds" "$reason"
    else
        printf '%-14s %-5s %8s  %s\n' "$stage" "-" "-" "not run yet"
    fi
done
