"""Decodes every Sparkplug message on a broker with two independent decoders
and prints one JSON line per message.

Usage: sparkplug_decode.py HOST PORT. Prints `subscribed` once subscribed, then for
each message {"topic", "pb", "psp" or "psp_error"}: "pb" is Google's protobuf
runtime with the classes generated from the official sparkplug_b.proto (a
field-level view: uint32/uint64 as the wire holds them), "psp" is
pysparkplug's typed decoding (DATA decoded against the last birth).
"""

import base64
import datetime
import json
import sys

import paho.mqtt.client as mqtt
import pysparkplug as psp
from google.protobuf import json_format
from pysparkplug._protobuf import sparkplug_b_pb2

host, port = sys.argv[1], int(sys.argv[2])
births = {}
DECODERS = {
    "NBIRTH": psp.NBirth,
    "DBIRTH": psp.DBirth,
    "NDATA": psp.NData,
    "DDATA": psp.DData,
    "NDEATH": psp.NDeath,
    "DDEATH": psp.DDeath,
}


def typed(value):
    if isinstance(value, datetime.datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, tuple):
        return [typed(v) for v in value]
    return value


def on_message(_client, _userdata, msg):
    out = {"topic": msg.topic}
    pb = sparkplug_b_pb2.Payload()
    try:
        pb.ParseFromString(msg.payload)
        out["pb"] = json_format.MessageToDict(pb, preserving_proto_field_name=True)
    except Exception as exc:  # noqa: BLE001 - report any decoder failure
        out["pb_error"] = repr(exc)
    parts = msg.topic.split("/")
    kind = parts[2] if len(parts) > 2 else ""
    decoder = DECODERS.get(kind)
    if decoder is not None:
        node_key = tuple(parts[:2] + parts[3:])
        try:
            if kind.endswith("BIRTH"):
                payload = decoder.decode(msg.payload)
                births[node_key] = payload
            else:
                payload = decoder.decode(msg.payload, birth=births.get(node_key))
            # pysparkplug's NDeath holds only its bdSeq metric.
            metrics = getattr(payload, "metrics", None) or (payload.bd_seq_metric,)
            out["psp"] = {
                m.name or str(m.alias): {"datatype": int(m.datatype), "value": typed(m.value), "is_historical": m.is_historical}
                for m in metrics
            }
        except Exception as exc:  # noqa: BLE001 - report any decoder failure
            out["psp_error"] = repr(exc)
    print(json.dumps(out, default=repr), flush=True)


def on_subscribe(*_args):
    print("subscribed", flush=True)


client = mqtt.Client(client_id="py-decode", protocol=mqtt.MQTTv311)
client.on_message = on_message
client.on_subscribe = on_subscribe
client.on_connect = lambda c, *_: c.subscribe("spBv1.0/#", qos=1)
client.connect(host, port)
client.loop_forever()
