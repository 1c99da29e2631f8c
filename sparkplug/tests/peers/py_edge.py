"""A pysparkplug edge node for the interop tests.

Usage: py_edge.py HOST PORT. Connects (births), then reads commands from
stdin: `update` publishes NDATA, `disconnect` publishes NDEATH and leaves.
Prints `ok <command>` after each.
"""

import datetime
import sys

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
node = psp.EdgeNode(group_id="Interop", edge_node_id="py-edge", metrics=metrics)
node.connect(host, port=port, blocking=False)
print("ok connect", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "update":
        node.update([metric("int16", T.INT16, -12345), metric("double", T.DOUBLE, 3.5)])
    elif command == "disconnect":
        node.disconnect()
    print(f"ok {command}", flush=True)
