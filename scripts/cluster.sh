#!/usr/bin/env bash
# A three-node Kassa cluster on one machine (docs/CLUSTER.md): `kassa migrate` once, then three
# `kassa serve` in cluster mode on 127.0.0.1:8081, :8082 and :8083, sharing one PostgreSQL
# schema, one RabbitMQ prefix, one Redis and one master key. Node 1 also runs the sandbox
# provider on a fixed port (127.0.0.1:8090); nodes 2 and 3 point every channel's base URL at
# it, so all three charge the same sandbox ledger (as tests/cluster.rs does with two nodes).
# Prints the three URLs, waits until each answers /readyz, then runs until Ctrl-C, which stops
# all three (SIGTERM: a graceful drain; SIGKILL after CLUSTER_STOP_TIMEOUT_S). A node that dies
# on its own (or is `kill -9`ed in a drill: its pid is printed) is reported, and the other two
# go on serving.
#
# The binary: `cargo build --release --locked -p kassa`, then target/release/kassa. Set
# KASSA_BIN=/path/to/kassa to run another build and skip cargo.
#
# Services (../shared/SERVICES.md; scripts/services.sh starts them): PostgreSQL on
# 127.0.0.1:5432 (trust auth, database `test`), RabbitMQ on 127.0.0.1:5672 (guest/guest),
# Redis on 127.0.0.1:6379. KASSA_POSTGRES_URL, KASSA_POSTGRES_SCHEMA, KASSA_AMQP_URL,
# KASSA_NOTIFICATIONS_RABBITMQ_PREFIX, KASSA_REDIS_URL, KASSA_REDIS_KEY_PREFIX,
# KASSA_MASTER_KEY and KASSA_ADMIN_TOKEN override the defaults below; every other KASSA_*
# variable set here reaches all three nodes.
#
# The script's own knobs (not Kassa settings, so not KASSA_*):
#   CLUSTER_DIR             ./data/cluster   node data dirs (node-N/), logs (node-N.log), and
#                                            the generated master.key and admin.token
#   CLUSTER_PORT_BASE       8080             node N listens on CLUSTER_PORT_BASE + N
#   CLUSTER_SANDBOX_PORT    8090             node 1's sandbox provider
#   CLUSTER_READY_TIMEOUT_S 120              how long each node may take to answer /readyz
#   CLUSTER_STOP_TIMEOUT_S  30               how long a node may take to exit after SIGTERM
#
# State survives a restart of the script (the schema, the queues, the master key and admin
# token in CLUSTER_DIR). To start over: stop it, `rm -rf data/cluster`, and
# `psql -h 127.0.0.1 -U postgres -d test -c 'DROP SCHEMA kassa_cluster CASCADE'`.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NODES=3
cluster_dir=${CLUSTER_DIR:-./data/cluster}
port_base=${CLUSTER_PORT_BASE:-8080}
sandbox_port=${CLUSTER_SANDBOX_PORT:-8090}
ready_timeout_s=${CLUSTER_READY_TIMEOUT_S:-120}
stop_timeout_s=${CLUSTER_STOP_TIMEOUT_S:-30}

# What every node shares (exported: `kassa migrate` and the three nodes inherit it).
export KASSA_MODE=cluster
export KASSA_POSTGRES_URL=${KASSA_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export KASSA_POSTGRES_SCHEMA=${KASSA_POSTGRES_SCHEMA:-kassa_cluster}
export KASSA_NOTIFICATIONS_TRANSPORT=rabbitmq
export KASSA_AMQP_URL=${KASSA_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export KASSA_NOTIFICATIONS_RABBITMQ_PREFIX=${KASSA_NOTIFICATIONS_RABBITMQ_PREFIX:-kassa_cluster}
export KASSA_REDIS_URL=${KASSA_REDIS_URL:-redis://127.0.0.1:6379}
export KASSA_REDIS_KEY_PREFIX=${KASSA_REDIS_KEY_PREFIX:-kassa_cluster}

say() {
    printf 'cluster: %s\n' "$*" >&2
}

die() {
    say "$*"
    exit 1
}

# Answers when something accepts TCP connections on $1 (host) port $2.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# `host port` of a service URL: scheme://[user[:password]@]host[:port][/path].
url_host_port() {
    local rest=${1#*://} default_port=$2
    rest=${rest##*@}
    rest=${rest%%/*}
    rest=${rest%%\?*}
    if [[ $rest == *:* ]]; then
        printf '%s %s\n' "${rest%%:*}" "${rest##*:}"
    else
        printf '%s %s\n' "$rest" "$default_port"
    fi
}

need_service() {
    local name=$1 url=$2 default_port=$3 host port
    read -r host port < <(url_host_port "$url" "$default_port")
    if ! port_open "$host" "$port"; then
        die "$name does not answer on $host:$port; start it (scripts/services.sh) and retry"
    fi
}

# 32 random bytes as 64 hex characters.
random_hex32() {
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

# The value of $1 if set, else the file $2's content, else a new random value saved in $2.
shared_secret() {
    local given=$1 file=$2
    if [[ -n $given ]]; then
        printf '%s' "$given"
    elif [[ -s $file ]]; then
        tr -d ' \n' <"$file"
    else
        (
            umask 077
            random_hex32 >"$file"
        )
        tr -d ' \n' <"$file"
    fi
}

need_service PostgreSQL "$KASSA_POSTGRES_URL" 5432
need_service RabbitMQ "$KASSA_AMQP_URL" 5672
need_service Redis "$KASSA_REDIS_URL" 6379
command -v curl >/dev/null 2>&1 || die "curl is needed to poll /readyz"
for port in $(seq $((port_base + 1)) $((port_base + NODES))) "$sandbox_port"; do
    if port_open 127.0.0.1 "$port"; then
        die "127.0.0.1:$port is already in use (another cluster.sh or Kassa?)"
    fi
done

mkdir -p "$cluster_dir"
# Every node seals and opens merchant secrets with this key: it must be the same on all.
KASSA_MASTER_KEY=$(shared_secret "${KASSA_MASTER_KEY:-}" "$cluster_dir/master.key")
KASSA_ADMIN_TOKEN=$(shared_secret "${KASSA_ADMIN_TOKEN:-}" "$cluster_dir/admin.token")
export KASSA_MASTER_KEY KASSA_ADMIN_TOKEN

if [[ -z ${KASSA_BIN:-} ]]; then
    say "building: cargo build --release --locked -p kassa"
    cargo build --release --locked -p kassa
    KASSA_BIN=target/release/kassa
fi
[[ -x $KASSA_BIN ]] || die "$KASSA_BIN is not an executable"

say "migrating schema $KASSA_POSTGRES_SCHEMA: $KASSA_BIN migrate"
"$KASSA_BIN" migrate

pids=()
stopping=0

# SIGTERM to every node, then wait for each (SIGKILL past the deadline).
stop_nodes() {
    if ((stopping)); then
        return
    fi
    stopping=1
    if ((${#pids[@]} == 0)); then
        return
    fi
    say "stopping the nodes"
    local pid deadline=$((SECONDS + stop_timeout_s))
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                say "node (pid $pid) did not exit within ${stop_timeout_s}s; SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
        wait "$pid" 2>/dev/null || true
    done
    say "stopped"
}
trap 'stop_nodes; exit 130' INT
trap 'stop_nodes; exit 143' TERM
trap stop_nodes EXIT

sandbox_url="http://127.0.0.1:$sandbox_port"
for n in $(seq 1 "$NODES"); do
    data_dir="$cluster_dir/node-$n"
    log="$cluster_dir/node-$n.log"
    mkdir -p "$data_dir"
    node_env=(
        "KASSA_HTTP_ADDR=127.0.0.1:$((port_base + n))"
        "KASSA_DATA_DIR=$data_dir"
    )
    if ((n == 1)); then
        node_env+=("KASSA_SANDBOX_ADDR=127.0.0.1:$sandbox_port")
    else
        node_env+=("KASSA_SANDBOX_ENABLED=false")
        for channel in CARD QR_WALLET APP_WALLET BANK_TRANSFER; do
            node_env+=("KASSA_CHANNELS_${channel}_BASE_URL=$sandbox_url")
        done
    fi
    printf '\n==== %s: node %s starts\n' "$(date -u +%FT%TZ)" "$n" >>"$log"
    env "${node_env[@]}" "$KASSA_BIN" serve >>"$log" 2>&1 &
    pids+=("$!")
    say "node $n: pid $!, http://127.0.0.1:$((port_base + n)), log $log"
done

# Polls node $1's /readyz until it answers 200, its process exits, or the deadline passes.
await_ready() {
    local n=$1 pid=${pids[$(($1 - 1))]} url deadline=$((SECONDS + ready_timeout_s))
    url="http://127.0.0.1:$((port_base + n))/readyz"
    until curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "node $n exited before it was ready; the end of $cluster_dir/node-$n.log:"
            tail -n 30 "$cluster_dir/node-$n.log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "node $n did not answer $url within ${ready_timeout_s}s; the end of its log:"
            tail -n 30 "$cluster_dir/node-$n.log" >&2
            curl -sS --max-time 2 "$url" >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

for n in $(seq 1 "$NODES"); do
    await_ready "$n"
    say "node $n ready"
done

cat <<EOF

Kassa cluster ready ($NODES nodes; schema $KASSA_POSTGRES_SCHEMA, queues $KASSA_NOTIFICATIONS_RABBITMQ_PREFIX.*, Redis keys $KASSA_REDIS_KEY_PREFIX:*):
EOF
for n in $(seq 1 "$NODES"); do
    printf '  node %s  http://127.0.0.1:%s\n' "$n" "$((port_base + n))"
done
cat <<EOF
  sandbox  $sandbox_url (in node 1)
  admin token: $KASSA_ADMIN_TOKEN   (also in $cluster_dir/admin.token)
  logs: $cluster_dir/node-N.log

Create a merchant through any node:
  curl -s -X POST -H "Authorization: Bearer \$(cat $cluster_dir/admin.token)" \\
       -d '{"name":"Books Ltd"}' http://127.0.0.1:$((port_base + 1))/admin/merchants
Ctrl-C stops all three.
EOF

# Run until Ctrl-C (the INT trap). A node that exits on its own (a crash, or `kill -9` in a
# drill) is reported and the others go on serving; when none is left, the script ends.
reported=()
while true; do
    wait -n || true
    running=0
    for n in $(seq 1 "$NODES"); do
        if kill -0 "${pids[$((n - 1))]}" 2>/dev/null; then
            running=$((running + 1))
        elif [[ -z ${reported[$n]:-} ]]; then
            reported[n]=1
            say "node $n exited; the others go on. The end of $cluster_dir/node-$n.log:"
            tail -n 20 "$cluster_dir/node-$n.log" >&2
        fi
    done
    if ((running == 0)); then
        die "every node has exited"
    fi
done
