"""An edge node that sends what Ignition-class peers send: a template
definition and instance (a UDT), a DataSet, arrays, a 64-bit integer past
2^53, and a DEFLATE-compressed payload (Eclipse Tahu's convention: uuid
SPBV1.0_COMPRESSED, the whole inner payload in `body`, an `algorithm`
metric). Encoded with Google's protobuf runtime and the classes generated
from the official sparkplug_b.proto (the ones pysparkplug ships), not with
shopfloor's code.

Usage: sparkplug_rich.py HOST PORT GROUP EDGE T0_MS. Reads commands on
stdin, one a line, and prints `ok COMMAND` once the broker acknowledged:
  birth                 NBIRTH (bdSeq 0, seq 0), readings at T0
  data                  NDATA, compressed: Motor1 (alias 2, members without
                        datatypes) Speed 1600.0, Big = 2^63 - 1, at T0 + 1000
  speed VALUE           NDATA, plain: Motor1/Speed = VALUE at now
"""

import struct
import sys
import time
import zlib

import paho.mqtt.client as mqtt
from pysparkplug._protobuf import sparkplug_b_pb2 as pb

host, port, group, edge, t0 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
# DataType numbers (Sparkplug 3.0, 6.4.16).
INT32, INT64, FLOAT, DOUBLE, BOOLEAN, STRING = 3, 4, 9, 10, 11, 12
DATASET, TEMPLATE, DOUBLE_ARRAY, INT32_ARRAY = 16, 19, 31, 24
seq = 0


def next_seq():
    global seq
    s = seq
    seq = (seq + 1) % 256
    return s


def motor(template, speed, running, definition=False, with_types=True):
    template.is_definition = definition
    if not definition:
        template.template_ref = "Motor"
    m = template.metrics.add()
    m.name = "Speed"
    if with_types:
        m.datatype = FLOAT
    m.float_value = speed
    m = template.metrics.add()
    m.name = "Running"
    if with_types:
        m.datatype = BOOLEAN
    m.boolean_value = running


def birth():
    global seq
    seq = 0  # a birth, or a rebirth, starts the sequence again
    p = pb.Payload(timestamp=t0, seq=next_seq())
    m = p.metrics.add(name="bdSeq", datatype=INT64, long_value=0)
    m = p.metrics.add(name="Motor", datatype=TEMPLATE, timestamp=t0)
    motor(m.template_value, 0.0, False, definition=True)
    m = p.metrics.add(name="Motor1", alias=2, datatype=TEMPLATE, timestamp=t0)
    motor(m.template_value, 1500.0, True)
    m = p.metrics.add(name="Recipe", alias=3, datatype=DATASET, timestamp=t0)
    ds = m.dataset_value
    ds.num_of_columns = 2
    ds.columns.extend(["step", "setpoint"])
    ds.types.extend([INT32, DOUBLE])
    for step, sp in [(1, 180.5), (2, 200.0)]:
        row = ds.rows.add()
        row.elements.add(int_value=step)
        row.elements.add(double_value=sp)
    # Arrays travel as little-endian bytes (Sparkplug 3.0, 6.4.17).
    m = p.metrics.add(name="Temps", alias=4, datatype=DOUBLE_ARRAY, timestamp=t0)
    m.bytes_value = struct.pack("<3d", 20.5, 21.0, -3.25)
    m = p.metrics.add(name="Offsets", alias=5, datatype=INT32_ARRAY, timestamp=t0)
    m.bytes_value = struct.pack("<3i", -1, 0, 7)
    m = p.metrics.add(name="Big", alias=6, datatype=INT64, timestamp=t0)
    m.long_value = (1 << 53) + 1
    return p


def compressed_data():
    inner = pb.Payload(timestamp=t0 + 1000, seq=next_seq())
    m = inner.metrics.add(alias=2, timestamp=t0 + 1000)
    motor(m.template_value, 1600.0, True, with_types=False)
    m = inner.metrics.add(alias=6, timestamp=t0 + 1000)
    m.long_value = (1 << 63) - 1
    outer = pb.Payload(timestamp=t0 + 1000, uuid="SPBV1.0_COMPRESSED")
    outer.body = zlib.compress(inner.SerializeToString())
    outer.metrics.add(name="algorithm", datatype=STRING, string_value="DEFLATE")
    return outer


def speed(value):
    now = int(time.time() * 1000)
    p = pb.Payload(timestamp=now, seq=next_seq())
    m = p.metrics.add(alias=2, timestamp=now)
    t = m.template_value
    t.template_ref = "Motor"
    s = t.metrics.add()
    s.name = "Speed"
    s.float_value = value
    return p


client = mqtt.Client(client_id=f"rich-{edge}", protocol=mqtt.MQTTv311)
client.connect(host, port)
client.loop_start()
topic = f"spBv1.0/{group}/{{}}/{edge}"
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "birth":
        info = client.publish(topic.format("NBIRTH"), birth().SerializeToString(), qos=1)
    elif words[0] == "data":
        info = client.publish(topic.format("NDATA"), compressed_data().SerializeToString(), qos=1)
    elif words[0] == "speed":
        info = client.publish(topic.format("NDATA"), speed(float(words[1])).SerializeToString(), qos=1)
    else:
        print(f"unknown command {words[0]}", file=sys.stderr)
        continue
    info.wait_for_publish()
    print(f"ok {words[0]}", flush=True)
