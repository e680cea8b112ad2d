#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/seed-*) from valid requests: the JSON and
protobuf requests of ThingsBoard's documentation for every credentials type, CoAP datagrams
carrying them (whole and block-wise), and CSV files like README's import example."""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

JSON_REQUESTS = [
    {"deviceName": "DEVICE_NAME", "provisionDeviceKey": "PUT_PROVISION_KEY_HERE",
     "provisionDeviceSecret": "PUT_PROVISION_SECRET_HERE"},
    {"provisionDeviceKey": "k", "provisionDeviceSecret": "s"},
    {"deviceName": "d", "provisionDeviceKey": "k", "provisionDeviceSecret": "s",
     "credentialsType": "ACCESS_TOKEN", "token": "DEVICE_ACCESS_TOKEN"},
    {"deviceName": "d", "provisionDeviceKey": "k", "provisionDeviceSecret": "s",
     "credentialsType": "MQTT_BASIC", "clientId": "c", "username": "u", "password": "p"},
    {"deviceName": "d", "provisionDeviceKey": "k", "provisionDeviceSecret": "s",
     "credentialsType": "X509_CERTIFICATE", "hash": "MIIB+zCCAWSgAwIBAgIUe..."},
    {"deviceName": "gw", "provisionDeviceKey": "k", "provisionDeviceSecret": "s",
     "gateway": True, "credentialsType": None},
]


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(tag, wire, payload):
    key = varint(tag << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def string(tag, text):
    return field(tag, 2, text.encode())


def proto_request(name, kind, creds):
    msg = string(1, name) if name else b""
    msg += field(2, 0, varint(kind))
    msg += field(3, 2, string(1, "k") + string(2, "s"))
    if creds is not None:
        msg += field(4, 2, creds)
    msg += field(5, 0, varint(0))
    return msg


PROTO_REQUESTS = [
    proto_request("d", 0, None),
    proto_request("", 0, None),
    proto_request("d", 0, field(1, 2, string(1, "TOKEN"))),
    proto_request("d", 1, field(2, 2, string(1, "CERT"))),
    proto_request("d", 2, field(3, 2, string(1, "c") + string(2, "u") + string(3, "p"))),
]


def coap_option_bytes(options):
    out = b""
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta = number - last
        last = number
        length = len(value)

        def nibble(v):
            if v < 13:
                return v, b""
            if v < 269:
                return 13, bytes([v - 13])
            return 14, struct.pack(">H", v - 269)

        d, dx = nibble(delta)
        l, lx = nibble(length)
        out += bytes([d << 4 | l]) + dx + lx + value
    return out


def coap(payload, mid, confirmable=True, block1=None, token=b"\x01\x02"):
    options = [(11, b"api"), (11, b"v1"), (11, b"provision"), (12, b"\x32")]
    if block1 is not None:
        options.append((27, block1))
    first = 0x40 | (0 if confirmable else 0x10) | len(token)
    header = bytes([first, 0x02]) + struct.pack(">H", mid) + token
    body = coap_option_bytes(options)
    if payload:
        body += b"\xff" + payload
    return header + body


def framed(datagrams):
    return b"".join(struct.pack(">H", len(d)) + d for d in datagrams)


def coap_seeds():
    seeds = []
    for i, req in enumerate(JSON_REQUESTS[:3]):
        seeds.append(framed([coap(json.dumps(req).encode(), 0x100 + i)]))
    seeds.append(framed([coap(PROTO_REQUESTS[0], 0x200, confirmable=False)]))
    # A retransmission of the same message id.
    d = coap(json.dumps(JSON_REQUESTS[1]).encode(), 0x300)
    seeds.append(framed([d, d]))
    # Block1 in 16-byte blocks (szx 0), then a Block2 follow-up.
    body = json.dumps(JSON_REQUESTS[3]).encode()
    blocks = [body[i:i + 16] for i in range(0, len(body), 16)]
    datagrams = []
    for n, chunk in enumerate(blocks):
        more = 1 if n + 1 < len(blocks) else 0
        value = bytes([n << 4 | more << 3 | 0]) if n < 16 else struct.pack(">H", n << 4 | more << 3)
        datagrams.append(coap(chunk, 0x400 + n, block1=value))
    seeds.append(framed(datagrams))
    # A ping (empty CON) and a GET.
    seeds.append(framed([bytes([0x40, 0, 0, 1]), bytes([0x40, 0x01, 0, 2])]))
    return seeds


CSV_SEEDS = [
    b",name,type,label,serialNumber,accessToken\n"
    b"Sensor-001,Temperature Sensor,Warehouse A,SN-4A21F,tok-a1b2c3d4\n"
    b"Sensor-002,Temperature Sensor,Warehouse B,SN-4A22F,tok-e5f6g7h8\n",
    b",name,\"multi\nline\",x\n\"a\"\"b\",2,3\n\"unbalanced,4\nnext,5,6\n",
    b";name;type\r\nA;B\r\n\r\nC;D",
    b"\tname\tmqttClientId\tmqttUserName\tmqttPassword\nd\tc\tu\tp\n",
]


def write(target, seeds):
    path = os.path.join(HERE, "corpus", target)
    os.makedirs(path, exist_ok=True)
    for i, seed in enumerate(seeds):
        with open(os.path.join(path, f"seed-{i:02}"), "wb") as f:
            f.write(seed)


write("json_request", [json.dumps(r).encode() for r in JSON_REQUESTS] + [b"{}", b"[]", b"\"x\""])
write("protobuf_request", PROTO_REQUESTS + [json.dumps(JSON_REQUESTS[0]).encode()])
write("coap_message", coap_seeds())
write("csv_records", CSV_SEEDS)
