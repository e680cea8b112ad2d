#!/usr/bin/env python3
"""Writes provisiond.json, the Grafana dashboard. Edit the panels here and run it again
(or edit the dashboard in Grafana and export it over provisiond.json)."""
import os
import json
DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance=~"$instance"'
panels = []
y = 0
pid = 1
def row(title):
    global y, pid
    panels.append({"type": "row", "title": title, "id": pid, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    pid += 1; y += 1
def ts(title, desc, targets, unit="short", x=0, w=12, h=8, stack=False, newline=True):
    global y, pid
    p = {"type": "timeseries", "title": title, "description": desc, "id": pid, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10,
             "stacking": {"mode": "normal" if stack else "none", "group": "A"}}}, "overrides": []},
         "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}},
         "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": e, "legendFormat": l, "range": True}
                     for i, (e, l) in enumerate(targets)]}
    panels.append(p); pid += 1
    if newline: y += h
def stat(title, desc, expr, unit, x, w=6, h=4, newline=False, thresholds=None):
    global y, pid
    p = {"type": "stat", "title": title, "description": desc, "id": pid, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": x, "y": y},
         "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds or {"mode": "absolute", "steps": [{"color": "green", "value": None}]}}, "overrides": []},
         "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value", "graphMode": "area"},
         "targets": [{"datasource": DS, "refId": "A", "expr": expr, "instant": False, "range": True}]}
    panels.append(p); pid += 1
    if newline: y += h

row("Overview")
stat("Provisions/s", "Successful provisioning requests per second, all transports.",
     f'sum(rate(provisiond_requests_total{{{I}, status="SUCCESS"}}[$__rate_interval]))', "reqps", 0)
stat("Success ratio", "Share of provisioning requests answered SUCCESS over the last 5 minutes.",
     f'sum(rate(provisiond_requests_total{{{I}, status="SUCCESS"}}[5m])) / sum(rate(provisiond_requests_total{{{I}}}[5m]))', "percentunit", 6,
     thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "orange", "value": 0.9}, {"color": "green", "value": 0.95}]})
stat("Devices provisioned", "Devices whose provisionState is provisioned, all profiles.",
     f'sum(provisiond_devices_provisioned{{{I}}})', "short", 12)
stat("Devices stored", "Devices in the store (pre-provisioned, imported or created), all profiles.",
     f'sum(provisiond_devices_stored{{{I}}})', "short", 18, newline=True)

row("Throughput")
ts("Requests by transport and status", "Provisioning requests per second, split by transport (HTTP, MQTT, COAP) and wire status (SUCCESS, NOT_FOUND, FAILURE).",
   [(f'sum by (transport, status) (rate(provisiond_requests_total{{{I}}}[$__rate_interval]))', "{{transport}} {{status}}")], "reqps", x=0, newline=False)
ts("Devices per profile", "Devices stored and provisioned, per profile: the rollout's progress.",
   [(f'sum by (profile) (provisiond_devices_provisioned{{{I}}})', "{{profile}} provisioned"),
    (f'sum by (profile) (provisiond_devices_stored{{{I}}})', "{{profile}} stored")], "short", x=12)

row("Latency")
ts("Request latency percentiles", "p50, p90 and p99 of the time from a request's arrival to its answer, per transport.",
   [(f'histogram_quantile({q}, sum by (transport, le) (rate(provisiond_request_duration_seconds_bucket{{{I}}}[$__rate_interval])))', "{{transport}} p" + n)
    for q, n in [("0.5", "50"), ("0.9", "90"), ("0.99", "99")]], "s", x=0, newline=False)
ts("WAL sync (group commit) duration", "Time of one batch commit including the WAL fsync; every SUCCESS waits for one.",
   [(f'histogram_quantile(0.5, sum by (le) (rate(provisiond_store_sync_duration_seconds_bucket{{{I}}}[$__rate_interval])))', "p50"),
    (f'histogram_quantile(0.99, sum by (le) (rate(provisiond_store_sync_duration_seconds_bucket{{{I}}}[$__rate_interval])))', "p99")], "s", x=12)

row("Errors")
ts("Refusals by reason", "NOT_FOUND and FAILURE answers per second by their precise reason (never a secret or a device name).",
   [(f'sum by (status, reason) (rate(provisiond_requests_total{{{I}, status!="SUCCESS"}}[$__rate_interval]))', "{{status}} {{reason}}")], "reqps", x=0, newline=False)
ts("Wrong secrets per profile", "NOT_FOUND answers for a known provision key (a wrong secret), unknown keys, and requests the brute-force protection refused unchecked.",
   [(f'sum by (profile) (rate(provisiond_profile_requests_total{{{I}, status="NOT_FOUND"}}[$__rate_interval]))', "{{profile}}"),
    (f'sum(rate(provisiond_requests_total{{{I}, reason="unknown_key"}}[$__rate_interval]))', "unknown key"),
    (f'sum by (bucket) (rate(provisiond_provision_throttled_total{{{I}}}[$__rate_interval]))', "throttled ({{bucket}} bucket)")], "reqps", x=12)

row("Shards")
ts("Mailbox depth per shard", "Messages waiting in each shard's mailbox after its last batch; the dashed line is the capacity.",
   [(f'max by (shard) (provisiond_shard_mailbox_depth{{{I}}})', "shard {{shard}}"),
    (f'max(provisiond_shard_mailbox_capacity{{{I}}})', "capacity")], "short", x=0, w=8, newline=False)
ts("Group commit batch size", "Messages decided per WAL sync: mean and p99. Larger batches mean the sync cost is shared by more devices.",
   [(f'sum(rate(provisiond_shard_batch_size_sum{{{I}}}[$__rate_interval])) / sum(rate(provisiond_shard_batch_size_count{{{I}}}[$__rate_interval]))', "mean"),
    (f'histogram_quantile(0.99, sum by (le) (rate(provisiond_shard_batch_size_bucket{{{I}}}[$__rate_interval])))', "p99")], "short", x=8, w=8, newline=False)
ts("Mailbox full and overload", "Callers that found a mailbox full, and CoAP requests answered 5.03, per second.",
   [(f'sum(rate(provisiond_shard_mailbox_full_total{{{I}}}[$__rate_interval]))', "mailbox full"),
    (f'sum(rate(provisiond_coap_overload_total{{{I}}}[$__rate_interval]))', "CoAP 5.03")], "ops", x=16, w=8)

row("Store")
ts("Store size", "RocksDB live SST files, memtables and the compaction backlog.",
   [(f'sum(provisiond_store_sst_bytes{{{I}}})', "SST files"),
    (f'sum(provisiond_store_memtable_bytes{{{I}}})', "memtables"),
    (f'sum(provisiond_store_pending_compaction_bytes{{{I}}})', "pending compaction")], "bytes", x=0, w=12, newline=False)
ts("Data directory disk", "Free and total space of the data directory's filesystem; RocksDB needs headroom for compaction.",
   [(f'min(provisiond_disk_free_bytes{{{I}}})', "free"),
    (f'min(provisiond_disk_size_bytes{{{I}}})', "size")], "bytes", x=12, w=12)

row("Connections and transports")
ts("Open connections", "Open MQTT and HTTP connections.",
   [(f'sum by (transport) (provisiond_open_connections{{{I}}})', "{{transport}}")], "short", x=0, w=8, newline=False)
ts("MQTT sessions ended by the server", "MQTT connections closed by provisiond, by reason (connect timeout, not a provisioning client, wrong topic).",
   [(f'sum by (reason) (rate(provisiond_mqtt_refused_total{{{I}}}[$__rate_interval]))', "{{reason}}")], "ops", x=8, w=8, newline=False)
ts("CoAP message layer", "CoAP retransmissions answered from the dedup cache, malformed datagrams, early dedup evictions.",
   [(f'sum(rate(provisiond_coap_retransmissions_total{{{I}}}[$__rate_interval]))', "retransmissions"),
    (f'sum(rate(provisiond_coap_malformed_total{{{I}}}[$__rate_interval]))', "malformed"),
    (f'sum(rate(provisiond_coap_dedup_evictions_total{{{I}}}[$__rate_interval]))', "dedup evictions")], "ops", x=16, w=8)

row("Bulk import and process")
ts("Import rows by result", "Bulk-import rows per second: created, updated, failed.",
   [(f'sum by (result) (rate(provisiond_import_rows_total{{{I}}}[$__rate_interval]))', "{{result}}")], "ops", x=0, w=8, newline=False)
ts("Process memory", "Resident memory of the provisiond process.",
   [(f'sum(process_resident_memory_bytes{{{I}, job=~"provisiond.*"}})', "RSS")], "bytes", x=8, w=8, newline=False)
ts("Process CPU", "CPU seconds used per second (1 = one full core).",
   [(f'sum(rate(process_cpu_seconds_total{{{I}, job=~"provisiond.*"}}[$__rate_interval]))', "CPU")], "percentunit", x=16, w=8)

dash = {
  "title": "provisiond", "uid": "provisiond", "tags": ["provisiond", "iot", "provisioning"],
  "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
  "refresh": "10s", "time": {"from": "now-30m", "to": "now"},
  "description": "Device provisioning: throughput, latency, refusals, shards, store, connections. Each panel's meaning is in README.md, section Monitoring.",
  "templating": {"list": [
    {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0},
    {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
     "query": {"query": "label_values(provisiond_build_info, instance)", "refId": "instance"},
     "definition": "label_values(provisiond_build_info, instance)", "includeAll": True, "multi": True,
     "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "refresh": 2, "hide": 0}]},
  "annotations": {"list": []},
  "panels": panels,
}
json.dump(dash, open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "provisiond.json"), "w"), indent=2)
print(len(panels), "panels")
