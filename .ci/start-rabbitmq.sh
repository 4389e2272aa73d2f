#!/usr/bin/env bash
# Starts (or reuses) a RabbitMQ broker on 127.0.0.1:5672 for the integration tests and prints its URI. Idempotent.
# Debian's package does not start it (no init system here): run it detached with a loopback-only config.
set -euo pipefail

if [[ -n "${HYPERSD_TEST_RABBITMQ:-}" ]]; then
  echo "$HYPERSD_TEST_RABBITMQ"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null; then
  echo "rabbitmq-server not found; install it with: apt-get install rabbitmq-server" >&2
  exit 1
fi

exec 9>/tmp/hypersd-rabbitmq.lock
flock -w 180 9
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  conf=/etc/rabbitmq/rabbitmq.conf
  if ! grep -q '^listeners.tcp.default' "$conf" 2>/dev/null; then
    mkdir -p /etc/rabbitmq
    printf 'listeners.tcp.default = 127.0.0.1:5672\nloopback_users.guest = true\n' >> "$conf"
  fi
  # Erlang distribution on loopback too (epmd and the node's own port).
  export ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  rabbitmq-server -detached >&2
  for _ in $(seq 1 90); do
    rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break
    sleep 1
  done
  rabbitmq-diagnostics -q ping >/dev/null 2>&1 || { echo "RabbitMQ did not start; see /var/log/rabbitmq" >&2; exit 1; }
fi
echo "amqp://guest:guest@127.0.0.1:5672/"
