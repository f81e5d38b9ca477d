#!/usr/bin/env bash
# Makes sure the services of the scale-out tests run on this machine:
#   PostgreSQL on 127.0.0.1:5432 (user postgres, trust authentication, database `test`) and
#   Redis on 127.0.0.1:6379.
# Installs them from apt when absent and starts them when stopped; quick when both already
# answer. Idempotent. Needs root (as CI and the development machines run) for installing and
# starting; it does nothing when both services already answer.
set -euo pipefail

PG_PORT=5432
REDIS_PORT=6379

pg_up() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name, check function, tries of 0.2 s
    local name=$1 check=$2 tries=$3
    for _ in $(seq "$tries"); do
        if "$check"; then return 0; fi
        sleep 0.2
    done
    echo "services: $name did not come up" >&2
    return 1
}

# --- PostgreSQL -------------------------------------------------------------------------------
if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "services: installing PostgreSQL"
        apt_install postgresql
    fi
    # The newest installed cluster (Debian creates `main` with the package).
    version=$(pg_lsclusters -h 2>/dev/null | awk '{print $1}' | sort -V | tail -1)
    if [ -z "$version" ]; then
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        pg_createcluster "$version" main >/dev/null
    fi
    conf=/etc/postgresql/$version/main
    # Loopback only, trust for local connections (a test database on a development machine).
    sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
    sed -i "s/^#\?port = .*/port = $PG_PORT/" "$conf/postgresql.conf"
    cat >"$conf/pg_hba.conf" <<HBA
local   all all                trust
host    all all 127.0.0.1/32   trust
host    all all ::1/128        trust
HBA
    echo "services: starting PostgreSQL $version"
    pg_ctlcluster "$version" main start || pg_ctlcluster "$version" main restart
    wait_for PostgreSQL pg_up 100
fi
if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE test"
fi

# --- Redis ------------------------------------------------------------------------------------
if ! redis_up; then
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "services: installing Redis"
        apt_install redis-server
    fi
    echo "services: starting Redis"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no
    wait_for Redis redis_up 50
fi

echo "services: PostgreSQL 127.0.0.1:$PG_PORT and Redis 127.0.0.1:$REDIS_PORT are up"
