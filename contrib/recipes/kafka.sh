#!/bin/sh
# Kafka broker settings from /meta: broker.id from cardinal_value, the advertised listener
# from hostname, appended to (or making) server.properties. Usage: kafka.sh [PROPERTIES]
set -eu
META=${META:-/meta}
PROPS=${1:-/opt/kafka/config/server.properties}
mkdir -p "$(dirname "$PROPS")"
{
  echo "broker.id=$(cat "$META/self/cardinal_value")"
  echo "advertised.listeners=PLAINTEXT://$(cat "$META/self/hostname"):9092"
  echo "broker.rack=$(cat "$META/self/host/labels/zone" 2>/dev/null || echo default)"
} >> "$PROPS"
