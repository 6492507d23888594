#!/usr/bin/env bash
# Starts the services Kassa's service-backed tests use, on loopback, if they are not running
# (../shared/SERVICES.md): PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`), Redis on
# 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672 (guest/guest). Installs the Debian packages when
# they are missing. Idempotent and quiet when everything already answers.
#
# Exit status 0 when every service answers; 1 otherwise (test.sh fails under CI=true, and on a
# laptop the service-backed tests skip with a printed reason).
set -uo pipefail

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then as_root=(sudo); fi
fi

apt_updated=0
install_package() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "services: $1 is missing and this is not a Debian-like system; install it by hand" >&2
        return 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        "${as_root[@]}" apt-get update -qq >/dev/null || return 1
        apt_updated=1
    fi
    echo "services: installing $1" >&2
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "$1" >/dev/null
}

# Answers when something accepts connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

rabbitmq() {
    if port_open 5672; then
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        install_package rabbitmq-server || return 1
    fi
    echo "services: starting RabbitMQ" >&2
    # A node whose application was stopped (rabbitmqctl stop_app) only needs start_app.
    if ! "${as_root[@]}" rabbitmqctl -q start_app >/dev/null 2>&1; then
        "${as_root[@]}" rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    "${as_root[@]}" rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1
    if ! port_open 5672; then
        echo "services: RabbitMQ did not come up on 127.0.0.1:5672" >&2
        return 1
    fi
}

postgresql() {
    if port_open 5432; then
        return 0
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        install_package postgresql || return 1
    fi
    echo "services: starting PostgreSQL" >&2
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    "${as_root[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
        if pg_isready -q -h 127.0.0.1 -p 5432; then
            break
        fi
        sleep 1
    done
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "services: PostgreSQL did not come up on 127.0.0.1:5432" >&2
        return 1
    fi
    # The tests' database (trust auth on loopback, as on the project's machines).
    if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
        "${as_root[@]}" su postgres -c "createdb test" >/dev/null 2>&1 || true
    fi
}

redis() {
    if port_open 6379; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        install_package redis-server || return 1
    fi
    echo "services: starting Redis" >&2
    "${as_root[@]}" mkdir -p /var/lib/redis /var/log/redis
    "${as_root[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
    for _ in $(seq 1 30); do
        if redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG; then
            return 0
        fi
        sleep 1
    done
    echo "services: Redis did not come up on 127.0.0.1:6379" >&2
    return 1
}

status=0
postgresql || status=1
redis || status=1
rabbitmq || status=1
exit "$status"
