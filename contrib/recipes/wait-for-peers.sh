#!/bin/sh
# Block until every unit of this service is listed (service/scale of them), then run the
# command given. It never sleeps in a loop: metafs-waitrev blocks in poll() on
# /meta/revision until the view changes. Usage: wait-for-peers.sh [TIMEOUT_S] -- CMD...
set -eu
META=${META:-/meta}
TIMEOUT=${1:-300}
[ "${2:-}" = "--" ] && shift 2 || shift $#
want=$(cat "$META/service/scale")
start=$(date +%s)
while :; do
  rev=$(cat "$META/revision")  # before looking: a change after this read wakes the wait
  have=$(ls "$META/service/all_hosts" | wc -l)
  [ "$have" -ge "$want" ] && break
  left=$((TIMEOUT - ($(date +%s) - start)))
  [ "$left" -gt 0 ] || { echo "wait-for-peers: $have of $want peers after ${TIMEOUT}s" >&2; exit 124; }
  echo "wait-for-peers: $have of $want peers; waiting for a change" >&2
  metafs-waitrev "$META/revision" "$left" "$rev" >/dev/null || true
done
echo "wait-for-peers: all $want peers are here" >&2
[ $# -gt 0 ] && exec "$@"
exit 0
