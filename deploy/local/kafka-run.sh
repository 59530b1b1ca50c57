#!/bin/bash
# Entry point of the local Kafka image: writes server.properties from the KAFKA_*
# variables the way apache/kafka does (KAFKA_LOG_DIRS -> log.dirs; "__" -> "_",
# "___" -> "-"), formats the log directory once with $CLUSTER_ID, then runs the broker.
set -euo pipefail
conf=/opt/kafka/config/server.properties
: > "$conf"
while IFS='=' read -r var _; do
  case "$var" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_VERSION) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=${var#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!var}" >> "$conf"
done < <(env)
: "${CLUSTER_ID:?set CLUSTER_ID (a base64url UUID, as for apache/kafka)}"
log_dir=$(sed -n 's/^log\.dirs=//p' "$conf" | cut -d, -f1)
java_cmd=(java ${KAFKA_HEAP_OPTS} -XX:+UseG1GC -Djava.awt.headless=true
          -Dlog4j2.configurationFile=/opt/kafka/log4j2.yaml ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*')
if [ ! -f "${log_dir:-/var/lib/kafka/data}/meta.properties" ]; then
  "${java_cmd[@]}" kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" --config "$conf"
fi
exec "${java_cmd[@]}" kafka.Kafka "$conf"
