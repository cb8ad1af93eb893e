#!/usr/bin/env bash
# `make demo`: start a server on the embedded store, load the example, look around, stop.
set -euo pipefail
VENV=${1:-.venv}; PORT=${2:-8500}; DIR=${3:-/tmp/metafs-demo}
METAFS="$VENV/bin/metafs"
rm -rf "$DIR"; mkdir -p "$DIR"
export METADATA_CONNECTION_URL="http://127.0.0.1:$PORT/v1/kv/"
export DEPLOYMENT_UNIT_ID="5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"

"$METAFS" serve --listen "127.0.0.1:$PORT" --store "sqlite://$DIR/metafs.db" --log-level warning &
SERVER=$!
MNT="$DIR/units"
cleanup() {
  if mountpoint -q "$MNT"; then "$METAFS" umount "$MNT" && echo "== unmounted $MNT"; fi
  kill -TERM "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  echo "== server stopped"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "server did not start" >&2; exit 1; }
# the server made an operator token beside its store on first start (0600); only its hash is kept
export METAFS_TOKEN_FILE="$DIR/operator.token"
OPERATOR_TOKEN=$(cat "$METAFS_TOKEN_FILE")
# api TOKEN_VARIABLE CURL_ARGS...: a request as a container would make it; shows the
# variable's name, never the token
api() {
  local var=$1; shift
  echo; echo "\$ curl -H 'Metadata-Flavor: metafs' -H \"Authorization: Bearer \$$var\" $*"
  curl -s -H 'Metadata-Flavor: metafs' -H "Authorization: Bearer ${!var}" "$@"
}

run() { echo; echo "\$ $*"; "$@"; }
echo "== metafs serve on 127.0.0.1:$PORT, store sqlite://$DIR/metafs.db, operator token in $METAFS_TOKEN_FILE"
run "$METAFS" load contrib/examples/cluster.yaml
run "$METAFS" ls 5/test1/s4/
run "$METAFS" get self/cardinal_value
run "$METAFS" get self/hostname
run "$METAFS" ls service/all_hosts/
echo; echo "\$ for u in \$(metafs ls service/all_hosts/); do ... done   # a ZooKeeper ensemble"
for u in $("$METAFS" ls service/all_hosts/); do
  echo "server.$("$METAFS" get "service/all_hosts/${u}cardinal_value")=$("$METAFS" get "service/all_hosts/${u}hostname"):2888:3888"
done
api OPERATOR_TOKEN "http://127.0.0.1:$PORT/v1/kv/5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf115/all_hosts"
api OPERATOR_TOKEN -H 'Accept: application/json' "http://127.0.0.1:$PORT/v1/view/f58ce48e-a4d5-4c1b-905f-ee3b15ccf115/self/host"
echo; echo "== scoping: a unit token reads its own view, nothing of another account"
UNIT_TOKEN=$("$METAFS" token create --kind unit --subject f58ce48e-a4d5-4c1b-905f-ee3b15ccf115 2>/dev/null)
api UNIT_TOKEN "http://127.0.0.1:$PORT/v1/view/f58ce48e-a4d5-4c1b-905f-ee3b15ccf115/self/hostname"
api UNIT_TOKEN "http://127.0.0.1:$PORT/v1/kv/7/"
echo; echo "\$ curl -H \"Authorization: Bearer \$UNIT_TOKEN\" http://127.0.0.1:$PORT/v1/kv/5/   # no Metadata-Flavor"
curl -s -H "Authorization: Bearer $UNIT_TOKEN" "http://127.0.0.1:$PORT/v1/kv/5/"
echo; echo "\$ metafs wait self/hostname &   # then: metafs put 5/test1/s4/f58ce48e-.../hostname zk-one"
"$METAFS" wait self/hostname --timeout 10 | sed 's/^/  wait saw: /' &
WAITER=$!
sleep 0.5
"$METAFS" put "$DEPLOYMENT_UNIT_ID/hostname" zk-one >/dev/null
wait "$WAITER"
run "$METAFS" get revision

echo; echo "== the filesystem: one directory per unit, bind-mountable into each container at /meta"
mkdir -p "$MNT"
DEPLOYMENT_UNIT_ID= run "$METAFS" mount "$MNT" --log-file "$DIR/mount.log"   # no unit: host mode
U="$MNT/f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"
run ls "$MNT"
run ls -l "$U/self"
run cat "$U/self/cardinal_value" "$U/self/hostname" "$U/service/service_domain"
echo; echo "\$ for peer in \$U/service/all_hosts/*/; do ...; done"
for peer in "$U"/service/all_hosts/*/; do
  echo "server.$(cat "$peer/cardinal_value")=$(cat "$peer/hostname"):2888:3888"
done
run "$METAFS" put "$DEPLOYMENT_UNIT_ID/hostname" zk-two
sleep 0.1
run cat "$U/self/hostname"
echo; echo "\$ echo x > $U/self/hostname"
echo x > "$U/self/hostname" || true
