#!/usr/bin/env bash
# Starts the local PostgreSQL, Redis and RabbitMQ that the test suite talks to, but only the
# ones that are down. Safe to run repeatedly. Used by .ci/run; handy before `cargo test`.
set -uo pipefail

log() { echo "services: $*"; }

if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "postgresql up"
elif command -v pg_ctlcluster >/dev/null; then
  log "starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || log "postgresql failed to start"
  for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
else
  log "postgresql not installed: its tests will skip (or fail under CI=true)"
fi

if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "redis up"
elif command -v redis-server >/dev/null; then
  log "starting redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || log "redis failed to start"
  for _ in $(seq 1 40); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.25; done
else
  log "redis not installed: its tests will skip (or fail under CI=true)"
fi

if timeout 20 rabbitmqctl -q status >/dev/null 2>&1; then
  log "rabbitmq up"
elif command -v rabbitmq-server >/dev/null; then
  log "starting rabbitmq"
  rabbitmq-server -detached || log "rabbitmq failed to start"
  timeout 180 rabbitmqctl await_startup >/dev/null 2>&1 || log "rabbitmq did not come up in 180 s"
else
  log "rabbitmq not installed: its tests will skip (or fail under CI=true)"
fi
exit 0
