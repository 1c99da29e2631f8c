"""A pysparkplug edge node for the interop tests.

Usage: py_edge.py HOST PORT. Connects (births) and prints `ok connect` once
the broker accepted it; then reads commands from stdin: `update` publishes
NDATA, `disconnect` publishes NDEATH and leaves. Prints `ok <command>`
after each. An NCMD `Node Control/Rebirth` is honoured the way pysparkplug
allows (it has no rebirth call): a new session, which births anew; then
`ok rebirth` is printed.
"""

import datetime
import sys
import threading
import time

import pysparkplug as psp

host, port = sys.argv[1], int(sys.argv[2])
now = psp.get_current_timestamp
T = psp.DataType


def metric(name, datatype, value):
    return psp.Metric(timestamp=now(), name=name, datatype=datatype, value=value)


metrics = [
    metric("int8", T.INT8, -5),
    metric("int16", T.INT16, -300),
    metric("int32", T.INT32, -70000),
    metric("int64", T.INT64, -1),
    metric("uint8", T.UINT8, 200),
    metric("uint16", T.UINT16, 60000),
    metric("uint32", T.UINT32, 4000000000),
    metric("uint64", T.UINT64, 2**63),
    metric("float", T.FLOAT, 1.5),
    metric("double", T.DOUBLE, -2.25),
    metric("boolean", T.BOOLEAN, True),
    metric("string", T.STRING, "h\u00e9"),
    metric("datetime", T.DATETIME, datetime.datetime.fromtimestamp(1700000000, tz=datetime.timezone.utc)),
    metric("int16_array", T.INT16_ARRAY, (-1, 2)),
    metric("boolean_array", T.BOOLEAN_ARRAY, (True, False, True)),
]


def wait_connected():
    deadline = time.monotonic() + 20
    while not node._connected:
        if time.monotonic() > deadline:
            sys.exit("py_edge: no CONNACK within 20 s")
        time.sleep(0.01)


def rebirth():
    node.disconnect()
    node.connect(host, port=port, blocking=False)
    wait_connected()
    print("ok rebirth", flush=True)


def on_command(_node, message):
    for m in message.payload.metrics:
        if m.name == "Node Control/Rebirth" and m.value:
            # Not on paho's network thread, which the reconnect needs.
            threading.Thread(target=rebirth, daemon=True).start()


node = psp.EdgeNode(
    group_id="Interop", edge_node_id="py-edge", metrics=metrics, cmd_callback=on_command
)
node.connect(host, port=port, blocking=False)
wait_connected()
print("ok connect", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "update":
        node.update([metric("int16", T.INT16, -12345), metric("double", T.DOUBLE, 3.5)])
    elif command == "disconnect":
        node.disconnect()
    print(f"ok {command}", flush=True)
