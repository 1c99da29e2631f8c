"""A pymodbus device for the Modbus bridge tests.

Usage:
    modbus_device.py tcp PORT UNIT
    modbus_device.py rtu SERIAL_PATH UNIT

The device maps coils and discrete inputs 0..63, input registers 0..99, and
holding registers 0..199 and 210..299: holding registers 200..209 are not
mapped, so a read that touches them is refused with IllegalDataAddress.

Commands, one JSON object per line on stdin; each answered with one line:
    {"set": "h", "address": 10, "type": "f32", "order": "CDAB", "value": 1.5}
        encodes the value itself (Python's struct, independent of the bridge)
        and stores it; type is u16 i16 u32 i32 u64 i64 f32 f64 string bool,
        area h (holding), i (input), c (coil), d (discrete input)
    {"set": "h", "address": 10, "registers": [1, 2]}       raw registers
    {"get": "h", "address": 10, "count": 2}                prints the values
    {"delay": 0.5}     answer every request that much later (a slow device)
    {"writes": 20}     prints the first register of every write to holding
                       register 20 so far, in the order the device applied them
Prints "ready" once it serves, then "ok" (or the JSON values for get) per
command.
"""

import asyncio
import json
import logging
import struct
import sys
import threading

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Refused reads are part of the tests; pymodbus would log each with a trace.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
kind, where, unit = sys.argv[1], sys.argv[2], int(sys.argv[3])
delay = 0.0
FC_SET = {"h": 16, "i": 4, "c": 15, "d": 2}
FC_GET = {"h": 3, "i": 4, "c": 1, "d": 2}
FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "i64": ">q", "f32": ">f", "f64": ">d"}


def to_registers(typ, value, order, length):
    """The registers for a value: big-endian bytes, then the order's swaps."""
    if typ == "string":
        raw = value.encode().ljust(2 * length, b"\0")
    else:
        raw = struct.pack(FORMATS[typ], value)
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA", "BA"):
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    if order in ("CDAB", "DCBA"):
        regs.reverse()
    return regs


# (address, first value) of every register write, in the order applied.
writes = []


async def action(func_code, start_address, address, count, registers, set_values):
    if delay:
        await asyncio.sleep(delay)
    if func_code in (6, 16) and set_values:
        writes.append((address, int(set_values[0])))
    return None


device = SimDevice(
    id=unit,
    simdata=(
        [SimData(0, count=64, values=False, datatype=DataType.BITS)],
        [SimData(0, count=64, values=False, datatype=DataType.BITS)],
        [
            SimData(0, count=200, values=0, datatype=DataType.REGISTERS),
            SimData(210, count=90, values=0, datatype=DataType.REGISTERS),
        ],
        [SimData(0, count=100, values=0, datatype=DataType.REGISTERS)],
    ),
    action=action,
)


async def main():
    global delay
    if kind == "tcp":
        server = ModbusTcpServer(device, address=("127.0.0.1", int(where)))
    else:
        server = ModbusSerialServer(device, port=where, baudrate=115200)
    await server.serve_forever(background=True)
    loop = asyncio.get_running_loop()
    lines = asyncio.Queue()

    def read_stdin():
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    while (line := await lines.get()) is not None:
        cmd = json.loads(line)
        if "delay" in cmd:
            delay = float(cmd["delay"])
            print("ok", flush=True)
        elif "set" in cmd:
            area = cmd["set"]
            if "registers" in cmd:
                values = cmd["registers"]
            elif cmd.get("type") == "bool":
                values = [bool(cmd["value"])]
            else:
                values = to_registers(cmd["type"], cmd["value"], cmd.get("order", "ABCD"), cmd.get("length", 0))
            if area in ("c", "d"):
                values = [bool(v) for v in values]
            await server.async_setValues(unit, FC_SET[area], cmd["address"], values)
            print("ok", flush=True)
        elif "writes" in cmd:
            print(json.dumps([v for a, v in writes if a == cmd["writes"]]), flush=True)
        elif "get" in cmd:
            values = await server.async_getValues(unit, FC_GET[cmd["get"]], cmd["address"], cmd["count"])
            print(json.dumps([int(v) for v in values]), flush=True)


asyncio.run(main())
