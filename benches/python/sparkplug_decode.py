"""Times Python's Sparkplug decoders on payloads the Rust bench wrote.

Usage: sparkplug_decode.py NBIRTH_FILE DDATA_FILE. Prints one JSON object:
ns per decode (median of 7 repeats) for Google's protobuf runtime with the
official sparkplug_b.proto classes, and for pysparkplug's typed decoding
(DDATA against the decoded NBIRTH, as a host would).
"""

import json
import sys
import timeit

import google.protobuf
import pysparkplug as psp
from pysparkplug._protobuf import sparkplug_b_pb2

birth_bytes = open(sys.argv[1], "rb").read()
data_bytes = open(sys.argv[2], "rb").read()
birth = psp.NBirth.decode(birth_bytes)


def pb_decode(raw):
    p = sparkplug_b_pb2.Payload()
    p.ParseFromString(raw)
    return p


def ns_per_call(fn, raw):
    timer = timeit.Timer(lambda: fn(raw))
    loops, _ = timer.autorange()
    best = sorted(timer.repeat(repeat=7, number=loops))
    return best[len(best) // 2] / loops * 1e9


print(
    json.dumps(
        {
            "protobuf_version": google.protobuf.__version__,
            "protobuf_backend": getattr(google.protobuf.internal.api_implementation, "Type", lambda: "?")(),
            "pysparkplug_version": psp.__version__,
            "nbirth_protobuf_ns": ns_per_call(pb_decode, birth_bytes),
            "nbirth_pysparkplug_ns": ns_per_call(psp.NBirth.decode, birth_bytes),
            "ddata_protobuf_ns": ns_per_call(pb_decode, data_bytes),
            "ddata_pysparkplug_ns": ns_per_call(lambda raw: psp.DData.decode(raw, birth=birth), data_bytes),
        }
    )
)
