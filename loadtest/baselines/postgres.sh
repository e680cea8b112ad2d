#!/usr/bin/env bash
# BASELINE: the storage path of ThingsBoard's design on PostgreSQL 15, on this machine.
# Each transaction is what registering one provisioned device costs in a relational registry:
# insert the device row, its credentials row and its `provisionState` attribute row, with unique
# constraints on the device name and on the credentials id; durable (fsync and
# synchronous_commit on, PostgreSQL's defaults). pgbench runs it for SECONDS at each client
# count and the best rate is printed last ("best_tps N").
# Usage: loadtest/baselines/postgres.sh [SECONDS] [CLIENTS...]   (default: 10 s; 1 4 16 32 64 128)
set -euo pipefail
secs=${1:-10}; shift || true
[ $# -gt 0 ] || set -- 1 4 16 32 64 128
if ! command -v pg_ctlcluster >/dev/null || [ ! -d /usr/lib/postgresql/15 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-contrib >/dev/null
fi
bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/pg-baseline.XXXXXX)
chown postgres "$work"
as_pg() { runuser -u postgres -- "$@"; }
port=$((20000 + RANDOM % 20000))
cleanup() { as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
as_pg "$bin/initdb" -D "$work/data" >/dev/null
as_pg "$bin/pg_ctl" -D "$work/data" -o "-p $port -k $work -c listen_addresses='' -c max_connections=200 -c shared_buffers=512MB" -l "$work/log" -w start >/dev/null
psql_() { as_pg psql -h "$work" -p "$port" -v ON_ERROR_STOP=1 -q "$@"; }
psql_ -d postgres <<'SQL'
CREATE TABLE device (
  id uuid PRIMARY KEY, created_time bigint NOT NULL, tenant_id uuid NOT NULL,
  device_profile_id uuid NOT NULL, name varchar(255) NOT NULL, type varchar(255),
  CONSTRAINT device_name_unq_key UNIQUE (tenant_id, name));
CREATE TABLE device_credentials (
  id uuid PRIMARY KEY, created_time bigint NOT NULL, device_id uuid NOT NULL,
  credentials_type varchar(255), credentials_id varchar NOT NULL, credentials_value varchar,
  CONSTRAINT device_credentials_id_unq_key UNIQUE (credentials_id),
  CONSTRAINT device_credentials_device_id_unq_key UNIQUE (device_id));
CREATE TABLE attribute_kv (
  entity_id uuid NOT NULL, attribute_type int NOT NULL, attribute_key int NOT NULL,
  str_v varchar(10000000), last_update_ts bigint,
  CONSTRAINT attribute_kv_pkey PRIMARY KEY (entity_id, attribute_type, attribute_key));
SQL
cat > "$work/provision.sql" <<'SQL'
\set n random(1, 2000000000)
BEGIN;
WITH d AS (
  INSERT INTO device (id, created_time, tenant_id, device_profile_id, name, type)
  VALUES (gen_random_uuid(), 1, '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002',
          'device-' || :client_id || '-' || :n || '-' || txid_current(), 'default')
  RETURNING id),
c AS (
  INSERT INTO device_credentials (id, created_time, device_id, credentials_type, credentials_id)
  SELECT gen_random_uuid(), 1, id, 'ACCESS_TOKEN', md5(id::text) FROM d)
INSERT INTO attribute_kv (entity_id, attribute_type, attribute_key, str_v, last_update_ts)
  SELECT id, 1, 1, 'provisioned', 1 FROM d;
COMMIT;
SQL
chown postgres "$work/provision.sql"
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, PostgreSQL $($bin/postgres --version | awk '{print $3}')"
best=0
for c in "$@"; do
  tps=$( (as_pg pgbench -h "$work" -p "$port" -n -f "$work/provision.sql" -c "$c" -j "$(( c < $(nproc) ? c : $(nproc) ))" -T "$secs" postgres 2>"$work/pgbench.err" || true) \
        | awk '/^tps/ {print int($3)}')
  [ -n "$tps" ] || { echo "pgbench failed:" >&2; tail -5 "$work/pgbench.err" >&2; exit 1; }
  echo "clients $c: $tps transactions/s"
  [ "$tps" -gt "$best" ] && best=$tps
done
echo "best_tps $best"
