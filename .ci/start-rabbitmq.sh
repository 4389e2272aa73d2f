#!/usr/bin/env bash
# Starts (or reuses) a RabbitMQ broker on 127.0.0.1:5672 for the integration tests and prints its URI. Idempotent.
# Debian's package does not start it (no init system here): run it detached with a loopback-only config.
# It also listens with TLS (amqps) on 127.0.0.1:5671, with a private CA and a certificate for localhost and 127.0.0.1
# made here once (/etc/rabbitmq/tls; the tests trust ca.pem); a broker running without that listener is restarted.
set -euo pipefail

if [[ -n "${HYPERSD_TEST_RABBITMQ:-}" ]]; then
  echo "$HYPERSD_TEST_RABBITMQ"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null; then
  echo "rabbitmq-server not found; install it with: apt-get install rabbitmq-server" >&2
  exit 1
fi

conf=/etc/rabbitmq/rabbitmq.conf
tls=/etc/rabbitmq/tls

# A CA and a server certificate signed by it (SAN localhost and 127.0.0.1, the names clients connect by).
make_certificates() {
  [[ -s $tls/ca.pem && -s $tls/server.pem && -s $tls/server.key ]] && return
  local tmp
  tmp=$(mktemp -d)
  quiet() { "$@" 2>>"$tmp/openssl.log" || { cat "$tmp/openssl.log" >&2; return 1; }; }
  quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=HyperSd test CA' \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem"
  quiet openssl req -newkey rsa:2048 -nodes -subj '/CN=localhost' -keyout "$tmp/server.key" -out "$tmp/server.csr"
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=serverAuth' 'subjectAltName=DNS:localhost,IP:127.0.0.1' >"$tmp/server.ext"
  quiet openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial -days 3650 \
    -extfile "$tmp/server.ext" -out "$tmp/server.pem"
  mkdir -p "$tls"
  install -m 600 "$tmp/ca.key" "$tls/"
  install -m 644 "$tmp/server.pem" "$tmp/ca.pem" "$tls/"
  # the broker runs as the rabbitmq user; written last, so a run cut short makes them all again
  install -m 640 -g rabbitmq "$tmp/server.key" "$tls/"
  rm -rf "$tmp"
}

configure() {
  mkdir -p /etc/rabbitmq
  if ! grep -q '^listeners.tcp.default' "$conf" 2>/dev/null; then
    printf 'listeners.tcp.default = 127.0.0.1:5672\nloopback_users.guest = true\n' >>"$conf"
  fi
  if ! grep -q '^listeners.ssl.default' "$conf"; then
    # TLS 1.2 and 1.3; the broker asks no client certificate (clients log in with user and password)
    printf '%s\n' 'listeners.ssl.default = 127.0.0.1:5671' "ssl_options.cacertfile = $tls/ca.pem" \
      "ssl_options.certfile = $tls/server.pem" "ssl_options.keyfile = $tls/server.key" 'ssl_options.verify = verify_none' \
      'ssl_options.fail_if_no_peer_cert = false' 'ssl_options.versions.1 = tlsv1.3' 'ssl_options.versions.2 = tlsv1.2' >>"$conf"
  fi
}

running() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }
tls_listening() { rabbitmq-diagnostics -q listeners | grep -q 'port: 5671,'; }

start() {
  # Erlang distribution on loopback too (epmd and the node's own port).
  export ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  # not holding the lock (fd 9): a broker that inherits it keeps it as long as it runs, and the next run waits in vain
  rabbitmq-server -detached >&2 9>&-
  for _ in $(seq 1 90); do
    running && break
    sleep 1
  done
  running || { echo "RabbitMQ did not start; see /var/log/rabbitmq" >&2; exit 1; }
}

exec 9>/tmp/hypersd-rabbitmq.lock
flock -w 180 9
make_certificates
configure
running || start
# the node answers before its listeners are up
rabbitmqctl -q await_startup >&2
if ! tls_listening; then
  # running from before the TLS listener was configured: the config is read when the node starts
  echo "restarting RabbitMQ to add its TLS listener on 127.0.0.1:5671" >&2
  rabbitmqctl -q stop >&2
  start
  rabbitmqctl -q await_startup >&2
  tls_listening || { echo "RabbitMQ has no TLS listener on 127.0.0.1:5671; see /var/log/rabbitmq" >&2; exit 1; }
fi
echo "amqp://guest:guest@127.0.0.1:5672/"
