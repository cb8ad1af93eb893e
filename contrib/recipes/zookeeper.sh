#!/bin/sh
# A ZooKeeper ensemble member's config from /meta: myid from cardinal_value, one
# server.N line per unit of the service, ports from the service's metadata (defaults when
# absent). Usage: zookeeper.sh [DATA_DIR] [CONF_FILE]
set -eu
META=${META:-/meta}
DATA=${1:-/data}
CONF=${2:-/conf/zoo.cfg}
port() { cat "$META/service/metadata/zk/$1" 2>/dev/null || echo "$2"; }
mkdir -p "$DATA" "$(dirname "$CONF")"
cat "$META/self/cardinal_value" > "$DATA/myid"
{
  echo "tickTime=$(port tick_time 2000)"
  echo "dataDir=$DATA"
  echo "clientPort=$(port client_port 2181)"
  echo "initLimit=10"
  echo "syncLimit=5"
  for peer in "$META"/service/all_hosts/*/; do
    echo "server.$(cat "$peer/cardinal_value")=$(cat "$peer/hostname"):$(port peer_port 2888):$(port election_port 3888)"
  done
} > "$CONF"
