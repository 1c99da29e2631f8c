"""An amqtt MQTT 3.1.1-only broker: a second, independent broker for the tests.

Usage: mqtt311_broker.py PORT

Listens on 127.0.0.1:PORT only (plain TCP, no websocket listener), accepts
every client (no authentication), publishes no $SYS topics and writes no
files. A CONNECT of protocol level 5 (or any level but 4) with name "MQTT" is
answered with the 3.1.1 CONNACK "unacceptable protocol version", 20 02 00 01,
and the connection closed; an MQTT 3.1 CONNECT ("MQIsdp") is closed unanswered.

amqtt 0.12.1 faults worked around here:
- It reads an MQTT 5 CONNECT's properties as the client id's length and
  waits for bytes that never come (no CONNACK until the client gives up):
  SkipOtherLevels skips the payload of a CONNECT that is not level 4.
- Its AnonymousAuthPlugin marks every session anonymous, and amqtt drops an
  anonymous session once it disconnects and queues nothing for it, so
  clean_session=0 would mean nothing: AcceptAll accepts without that mark.
- On every CONNECT it sends the client (QoS 0, retain 1, before any
  SUBSCRIBE) each retained message that matches a filter any session holds,
  and sends the messages queued for a persistent session with retain 1:
  Broker311 sends retained messages only on SUBSCRIBE, queued ones retain 0.
- It never drops a client that stays silent past its keep-alive, so such a
  client's will is never sent: Broker311 waits 1.5 times the keep-alive
  [MQTT-3.1.2-24], then ends the connection as if the client had closed it.
- It forgets an outgoing QoS 1 message once it stops waiting for its PUBACK
  (after 5 s, or when the connection closes), so a persistent session never
  gets the unacknowledged ones again [MQTT-4.4.0-1]: Handler311 keeps each
  in the session until its PUBACK and on every connection re-sends them
  (DUP 1), in order, before those queued while offline, without waiting.

Left as amqtt does it: a message is delivered at the subscription's QoS even
when published at a lower one, once per matching filter of a client.

Prints "ready" once it accepts connections, then runs until stdin is closed
or it gets SIGTERM (or SIGINT), and exits cleanly.
"""

import asyncio
import logging
import signal
import sys

from amqtt.broker import Broker
from amqtt.mqtt.connect import ConnectPacket, ConnectPayload
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import INCOMING, OutgoingApplicationMessage


class SkipOtherLevels(ConnectPayload):
    @classmethod
    async def from_stream(cls, reader, fixed_header, variable_header):
        if variable_header is None or variable_header.proto_level == 4:
            return await super().from_stream(reader, fixed_header, variable_header)
        # Consume the rest of the packet; amqtt then sends CONNACK 0x01.
        await reader.read(fixed_header.remaining_length - 6 - len(variable_header.proto_name.encode()))
        return cls(client_id="", will_topic="", will_message=b"")


ConnectPacket.PAYLOAD = SkipOtherLevels
# Called when no packet came within the keep-alive (amqtt's does nothing).
BrokerProtocolHandler.handle_read_timeout = lambda self: self.reader.feed_eof()


class Handler311(BrokerProtocolHandler):
    """Keeps each outgoing QoS 1 message in session.inflight_out, in order,
    until its PUBACK; `sent` holds those this connection has written."""

    def attach(self, session, reader, writer):
        # Called once the session is marked connected: from now on the broker
        # hands new messages to this handler, so those queued while offline
        # join the unacknowledged ones now, as new messages with retain 0.
        super().attach(session, reader, writer)
        self.sent, self.send_lock = {}, asyncio.Lock()
        while not session.retained_messages.empty():
            m = session.retained_messages.get_nowait()
            pid = session.next_packet_id
            session.inflight_out[pid] = OutgoingApplicationMessage(pid, m.topic, m.qos, m.data, False)

    async def send_inflight(self):
        async with self.send_lock:
            for m in list(self.session.inflight_out.values()):
                if m.qos == QOS_1 and self.sent.get(m.packet_id) is not m and self.session.inflight_out.get(m.packet_id) is m:
                    m.publish_packet = m.build_publish_packet(dup=m.publish_packet is not None)
                    await self._send_packet(m.publish_packet)
                    self.sent[m.packet_id] = m

    async def _retry_deliveries(self):  # called by start(), after CONNACK
        await self.send_inflight()
        await super()._retry_deliveries()  # QoS 2 as amqtt does it

    async def _handle_qos1_message_flow(self, message):
        if message.direction == INCOMING:
            return await super()._handle_qos1_message_flow(message)
        self.session.inflight_out.setdefault(message.packet_id, message)
        await self.send_inflight()

    async def handle_puback(self, puback):
        m = self.session.inflight_out.get(puback.variable_header.packet_id)
        if m and m.qos == QOS_1:
            del self.session.inflight_out[m.packet_id]


class AcceptAll(BaseAuthPlugin):
    async def authenticate(self, *, session):
        return True


class Broker311(Broker):
    async def _initialize_client_session(self, *args):
        handler, session = await super()._initialize_client_session(*args)
        handler.__class__ = Handler311  # amqtt makes a BrokerProtocolHandler
        session.keep_alive = (session.keep_alive * 3 + 1) // 2
        return handler, session

    async def _publish_session_retained_messages(self, session):
        # Called on CONNECT, right before the loop over every session's filters;
        # the handler's start() has already sent the queued messages.
        session.connecting = True

    async def _publish_retained_messages_for_subscription(self, subscription, session):
        if not getattr(session, "connecting", False):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _client_message_loop(self, session, handler):
        session.connecting = False
        await super()._client_message_loop(session, handler)


async def main():
    broker = Broker311(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{int(sys.argv[1])}"}},
            # Only this plugin: no packet/event loggers, no $SYS (BrokerSysPlugin).
            "plugins": {f"{__name__}.AcceptAll": {}},
        }
    )
    await broker.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def until_eof():
        while await stdin.read(4096):
            pass
        stop.set()

    eof = loop.create_task(until_eof())
    print("ready", flush=True)
    await stop.wait()
    eof.cancel()
    await broker.shutdown()


logging.basicConfig(level=logging.WARNING, format="mqtt311_broker: %(name)s: %(message)s")
asyncio.run(main())
