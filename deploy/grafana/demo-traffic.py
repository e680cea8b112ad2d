#!/usr/bin/env python3
"""Drives a few minutes of mixed provisioning traffic at a provisiond, so that the dashboard has
real data to show: HTTP devices with some replays, MQTT flows (mosquitto_rr), CoAP requests
(coap-client), a bulk import followed by its devices provisioning, and a burst of wrong secrets.
This is a demo, not a benchmark (that is the load tester's job).

  demo-traffic.py --http 127.0.0.1:8080 --mqtt 127.0.0.1:1883 --coap 127.0.0.1:5683 \
      --token "$(cat data/admin.token)" --seconds 300
"""
import argparse
import http.client
import json
import random
import shutil
import subprocess
import threading
import time

KEY, SECRET = "demo-fleet-key", "demo-fleet-secret"
PRE_KEY, PRE_SECRET = "demo-factory-key", "demo-factory-secret"


def admin(addr, token, method, path, body=None, content_type="application/json"):
    conn = http.client.HTTPConnection(*addr.split(":"), timeout=120)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, data, {"Authorization": f"Bearer {token}", "Content-Type": content_type})
    reply = conn.getresponse()
    return reply.status, reply.read().decode()


def request(key, secret, name):
    return json.dumps({"provisionDeviceKey": key, "provisionDeviceSecret": secret, "deviceName": name})


def http_worker(addr, stop, worker, rate):
    conn = http.client.HTTPConnection(*addr.split(":"), timeout=30)
    n = 0
    while not stop.is_set():
        n += 1
        roll = random.random()
        if roll < 0.05 and n > 10:
            body = request(KEY, SECRET, f"http-{worker}-{random.randint(1, n - 1)}")  # replay
        elif roll < 0.07:
            body = request(KEY, SECRET, "")  # generated name
        else:
            body = request(KEY, SECRET, f"http-{worker}-{n}")
        conn.request("POST", "/api/v1/provision", body, {"Content-Type": "application/json"})
        conn.getresponse().read()
        time.sleep(random.expovariate(rate))


def mqtt_worker(addr, stop):
    host, port = addr.split(":")
    n = 0
    while not stop.is_set():
        n += 1
        version = "mqttv5" if n % 2 else "mqttv311"
        subprocess.run(["mosquitto_rr", "-V", version, "-h", host, "-p", port, "-u", "provision",
                        "-t", "/provision/request", "-e", "/provision/response",
                        "-m", request(KEY, SECRET, f"mqtt-{n}"), "-W", "10"],
                       capture_output=True)


def coap_worker(addr, stop):
    binary = shutil.which("coap-client") or shutil.which("coap-client-notls")
    n = 0
    while not stop.is_set():
        n += 1
        subprocess.run([binary, "-m", "POST", "-t", "application/json",
                        "-e", request(KEY, SECRET, f"coap-{n}"), f"coap://{addr}/api/v1/provision"],
                       capture_output=True)


def factory_worker(addr, stop, count, rate):
    conn = http.client.HTTPConnection(*addr.split(":"), timeout=30)
    for n in range(count):
        if stop.is_set():
            return
        conn.request("POST", "/api/v1/provision", request(PRE_KEY, PRE_SECRET, f"factory-{n:06}"),
                     {"Content-Type": "application/json"})
        conn.getresponse().read()
        time.sleep(random.expovariate(rate))


def guesser(addr, stop, seconds, rate):
    conn = http.client.HTTPConnection(*addr.split(":"), timeout=30)
    end = time.time() + seconds
    while time.time() < end and not stop.is_set():
        conn.request("POST", "/api/v1/provision", request(PRE_KEY, f"guess-{random.random()}", "x"),
                     {"Content-Type": "application/json"})
        conn.getresponse().read()
        time.sleep(1 / rate)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--http", required=True)
    p.add_argument("--mqtt", required=True)
    p.add_argument("--coap", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--seconds", type=float, default=300)
    args = p.parse_args()

    for name, key, secret, strategy in [("fleet", KEY, SECRET, "ALLOW_CREATE_NEW_DEVICES"),
                                        ("factory", PRE_KEY, PRE_SECRET, "CHECK_PRE_PROVISIONED_DEVICES")]:
        status, text = admin(args.http, args.token, "POST", "/api/admin/profiles",
                             {"name": name, "strategy": strategy, "provisionDeviceKey": key,
                              "provisionDeviceSecret": secret})
        print("profile", name, status, text[:80])
    stop = threading.Event()
    threads = [threading.Thread(target=http_worker, args=(args.http, stop, w, 150)) for w in range(4)]
    threads += [threading.Thread(target=mqtt_worker, args=(args.mqtt, stop)),
                threading.Thread(target=coap_worker, args=(args.coap, stop))]
    for t in threads:
        t.start()
    start = time.time()
    phase = args.seconds / 5
    time.sleep(phase)
    rows = 50000
    csv = "name,type\n" + "".join(f"factory-{n:06},meter\n" for n in range(rows))
    status, text = admin(args.http, args.token, "POST", "/api/admin/import?profile=factory", csv.encode(), "text/csv")
    print("import", status, text[:120])
    factory = threading.Thread(target=factory_worker, args=(args.http, stop, rows, 300))
    factory.start()
    time.sleep(phase)
    print("wrong-secret burst")
    guesser(args.http, stop, phase / 2, 40)
    time.sleep(max(0, args.seconds - (time.time() - start)))
    stop.set()
    for t in threads + [factory]:
        t.join()
    print("done after", round(time.time() - start), "s")


if __name__ == "__main__":
    main()
