#!/bin/sh
# The flags that make this unit a member of a new etcd cluster of its service's units:
# --name from hostname, --initial-cluster listing every peer (sorted by cardinal_value).
# Usage: exec etcd $(etcd-initial-cluster.sh) --data-dir ...
set -eu
META=${META:-/meta}
PEER_PORT=${PEER_PORT:-2380}
me=$(cat "$META/self/hostname")
cluster=$(
  for peer in "$META"/service/all_hosts/*/; do
    echo "$(cat "$peer/cardinal_value") $(cat "$peer/hostname")"
  done | sort -n | while read -r _ host; do printf '%s=http://%s:%s,' "$host" "$host" "$PEER_PORT"; done
)
cluster=${cluster%,}
echo "--name $me --initial-advertise-peer-urls http://$me:$PEER_PORT --initial-cluster $cluster --initial-cluster-state new --initial-cluster-token $(cat "$META/self/service_name")-$(cat "$META/self/stack_name")"
