#!/usr/bin/env bash
# Start Redis and PostgreSQL when they are not answering on 127.0.0.1 (installing them
# from Debian's packages if needed). `redis` or `postgres` as arguments pick which.
set -euo pipefail

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(redis postgres)

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  [ "$(id -u)" = 0 ] || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}

for service in "${want[@]}"; do
  case "$service" in
    redis)
      answers 6379 && continue
      command -v redis-server >/dev/null || apt_install redis-server
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
      ;;
    postgres)
      answers 5432 && continue
      command -v pg_ctlcluster >/dev/null || apt_install postgresql
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
      ;;
  esac
  for _ in $(seq 1 50); do answers "$([ "$service" = redis ] && echo 6379 || echo 5432)" && break; sleep 0.2; done
done
