"""An asyncua OPC UA server for the OPC UA bridge tests.

Usage:
    opcua_server.py PORT [--items N] [--interval S] [--user NAME:PASSWORD]
                         [--pki DIR [--cert-names NAMES]] [--trust DIR] [--fix-transfer]

Serves opc.tcp://localhost:PORT/ with namespace "urn:shopfloor:test" and an
object "Machine1" (NodeId ns=<that namespace>;s=Machine1) whose variables
have string NodeIds "Machine1.<Name>":

    Temperature  Double   EURange 0..200, EngineeringUnits degree Celsius
    Pressure     Float
    Count        Int32
    Total        UInt64
    Running      Boolean
    Name         String
    Profile      Double[]
    Setpoint     Double, writable
    Id           NodeId   (no shopfloor Value for it: reported, not dropped)

With --items N, also N Double variables "Machine1.Item<i>" (i from 0), and
with --interval S every one of them (and Count) changes every S seconds.
--user makes username/password the only identity accepted. --pki DIR
serves every security policy and mode with the certificate in
DIR/server_cert.der and its key DIR/server_key.pem, made there (for
localhost, application URI urn:shopfloor:test:server) when absent: delete
them for a new certificate. --cert-names makes that certificate (RSA 2048,
by Python's cryptography) with exactly these SubjectAltName entries in this
order, e.g. "DNS:myhost,IP:127.0.0.1,URI:urn:shopfloor:test:server" (how
node-opcua orders them: a DNS name first). --trust makes the server accept only client
certificates found in DIR.

--fix-transfer patches asyncua 2.1.0's TransferSubscriptions: it re-points
a transferred subscription's publish results to the new session but not
its publish requests, so the subscription never publishes again (see
shared/reference/opcua-notes.md). Without the flag the bug stays, which
tests the bridge's fallback (recreate when a transfer stays silent).

Commands, one JSON object per line on stdin; each answered with one line:
    {"set": "Temperature", "value": 21.5}           a new value, status Good
    {"set": "Temperature", "value": 1, "status": "BadSensorFailure"}
    {"get": "Setpoint"}                              prints {"value": ...}
    {"delete": "Temperature"}                        removes the node
    {"add": "Temperature"}                           adds it back (same NodeId)
    {"writes": "Setpoint"}     prints the values written to that variable so
                               far, in the order the server applied them
    {"delay": 0.5}             answers every request that much later
    {"jitter": 0.02}           and each a random 0..0.02 s later still (a
                               server whose answers take varying time)
    {"stats": true}            prints {"published": n, "sent": s, "created": c,
                               "transferred": t}: data changes made, value
                               notifications sent to clients, subscriptions
                               created, subscriptions transferred
    {"drop_sessions": true}    forgets every client session but keeps its
                               subscriptions, and closes the connections: the
                               client must make a new session and transfer
                               them (prints {"dropped": n})
Prints "ready" once it serves, then "ok" (or the JSON asked for) per command.
"""

import argparse
import asyncio
import datetime
import json
import logging
import random
import sys

from asyncua import Server, ua

logging.basicConfig(level=logging.ERROR)
for name in ("asyncua", "asyncua.server", "asyncua.common"):
    logging.getLogger(name).setLevel(logging.CRITICAL)

NS_URI = "urn:shopfloor:test"
SCALARS = {
    "Temperature": (21.0, ua.VariantType.Double),
    "Pressure": (1.5, ua.VariantType.Float),
    "Count": (0, ua.VariantType.Int32),
    "Total": (2**40, ua.VariantType.UInt64),
    "Running": (True, ua.VariantType.Boolean),
    "Name": ("press-1", ua.VariantType.String),
    "Profile": ([1.0, 2.0, 3.0], ua.VariantType.Double),
    "Setpoint": (50.0, ua.VariantType.Double),
    "Id": (ua.NodeId(1, 1), ua.VariantType.NodeId),
}


def make_certificate(cert_path, key_path, names):
    """A self-signed server certificate whose SubjectAltName lists `names`
    (DNS:…, IP:…, URI:…) in the order given."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alt = []
    for n in names:
        kind, _, value = n.partition(":")
        alt.append(
            {
                "DNS": lambda v: x509.DNSName(v),
                "IP": lambda v: x509.IPAddress(ipaddress.ip_address(v)),
                "URI": lambda v: x509.UniformResourceIdentifier(v),
            }[kind](value)
        )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shopfloor test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--items", type=int, default=0)
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--user")
    p.add_argument("--pki")
    p.add_argument("--trust")
    p.add_argument("--cert-names")
    p.add_argument("--fix-transfer", action="store_true")
    args = p.parse_args()

    user_manager = None
    if args.user:
        user_name, user_password = args.user.split(":", 1)

        class Users:
            def get_user(self, iserver, username=None, password_=None, certificate=None, **kw):
                from asyncua.crypto.permission_rules import User, UserRole

                given = kw.get("password", password_)
                if isinstance(given, bytes):
                    given = given.decode("utf-8", "replace")
                if username == user_name and given == user_password:
                    return User(role=UserRole.User)
                return None

        user_manager = Users()
    server = Server(user_manager=user_manager) if user_manager else Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://localhost:{args.port}/")
    server.set_server_name("shopfloor test server")
    if args.pki:
        from pathlib import Path

        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        pki = Path(args.pki)
        pki.mkdir(parents=True, exist_ok=True)
        cert, key = pki / "server_cert.der", pki / "server_key.pem"
        await server.set_application_uri("urn:shopfloor:test:server")
        if args.cert_names:
            # asyncua's helper would replace a certificate it did not make.
            if not cert.exists():
                make_certificate(cert, key, args.cert_names.split(","))
        else:
            await setup_self_signed_certificate(
                key,
                cert,
                "urn:shopfloor:test:server",
                "localhost",
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
                {"countryName": "DE", "organizationName": "shopfloor", "commonName": "shopfloor test server"},
            )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy(
            [
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
                ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
                ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
                ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
            ]
        )
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if args.user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    if args.trust:
        from asyncua.crypto.truststore import TrustStore
        from asyncua.crypto.validator import CertificateValidator

        store = TrustStore([args.trust], [])
        await store.load()
        server.set_certificate_validator(CertificateValidator(trust_store=store))

    idx = await server.register_namespace(NS_URI)
    machine = await server.nodes.objects.add_object(ua.NodeId("Machine1", idx), ua.QualifiedName("Machine1", idx))
    nodes = {}

    async def add(name, value, vtype):
        node = await machine.add_variable(
            ua.NodeId(f"Machine1.{name}", idx), ua.QualifiedName(name, idx), ua.Variant(value, vtype)
        )
        if name == "Setpoint":
            await node.set_writable()
        if name == "Temperature":
            await node.add_property(idx, "EURange", ua.Range(0.0, 200.0))
            unit = ua.EUInformation(
                NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                UnitId=4408652,
                DisplayName=ua.LocalizedText("°C"),
                Description=ua.LocalizedText("degree Celsius"),
            )
            await node.add_property(idx, "EngineeringUnits", unit)
        nodes[name] = (node, vtype)

    for name, (value, vtype) in SCALARS.items():
        await add(name, value, vtype)

    # Every value written, by node name, in the order the server took them.
    written = {}
    from asyncua.common.callback import CallbackType

    def record_write(event, _dispatcher):
        for w in event.request_params.NodesToWrite:
            name = w.NodeId.Identifier.removeprefix("Machine1.") if isinstance(w.NodeId.Identifier, str) else None
            if name is not None and w.Value.Value is not None:
                written.setdefault(name, []).append(w.Value.Value.Value)

    server.subscribe_server_callback(CallbackType.PreWrite, record_write)
    for i in range(args.items):
        await add(f"Item{i}", 0.0, ua.VariantType.Double)

    from asyncua.server import uaprocessor

    state = {"delay": 0.0, "jitter": 0.0, "published": 0, "sent": 0, "created": 0, "transferred": 0}
    forward = uaprocessor.UaProcessor.forward_publish_response

    async def counted_forward(self, result, requestdata):
        for n in result.NotificationMessage.NotificationData or []:
            state["sent"] += len(getattr(n, "MonitoredItems", None) or [])
        return await forward(self, result, requestdata)

    uaprocessor.UaProcessor.forward_publish_response = counted_forward
    from asyncua.server import subscription_service

    service = subscription_service.SubscriptionService
    create_subscription = service.create_subscription
    transfer_subscriptions = service.transfer_subscriptions

    async def counted_create(self, *a, **kw):
        state["created"] += 1
        return await create_subscription(self, *a, **kw)

    async def counted_transfer(self, params, session_id, callback):
        results = await transfer_subscriptions(self, params, session_id, callback)
        for sub_id, r in zip(params.SubscriptionIds, results):
            sub = self.subscriptions.get(int(sub_id))
            if sub is None or not r.StatusCode.is_good():
                continue
            state["transferred"] += 1
            if args.fix_transfer:
                # The missing line: publish requests come from the new
                # session's processor too.
                sub.pub_request_callback = callback.__self__.get_publish_request
        return results

    service.create_subscription = counted_create
    service.transfer_subscriptions = counted_transfer
    # Slow responses: every service request waits first.

    process = uaprocessor.UaProcessor.process_message

    async def slow(self, *a, **kw):
        if state["delay"] or state["jitter"]:
            await asyncio.sleep(state["delay"] + random.uniform(0, state["jitter"]))
        return await process(self, *a, **kw)

    uaprocessor.UaProcessor.process_message = slow

    def now():
        return datetime.datetime.now(datetime.timezone.utc)

    async def write(name, value, status="Good"):
        node, vtype = nodes[name]
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            StatusCode=ua.StatusCode(getattr(ua.StatusCodes, status)),
            SourceTimestamp=now(),
            ServerTimestamp=now(),
        )
        await server.write_attribute_value(node.nodeid, dv)

    async def ticker():
        n = 0
        while True:
            await asyncio.sleep(args.interval)
            n += 1
            if "Count" in nodes:
                await write("Count", n)
            for i in range(args.items):
                name = f"Item{i}"
                if name in nodes:
                    await write(name, float(n * 1000 + i))
            state["published"] += args.items + 1

    async with server:
        if args.interval > 0:
            asyncio.get_running_loop().create_task(ticker())
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            out = "ok"
            if "set" in cmd:
                await write(cmd["set"], cmd["value"], cmd.get("status", "Good"))
            elif "writes" in cmd:
                out = json.dumps(written.get(cmd["writes"], []))
            elif "get" in cmd:
                node, _ = nodes[cmd["get"]]
                out = json.dumps({"value": await node.read_value()})
            elif "delete" in cmd:
                node, _ = nodes.pop(cmd["delete"])
                await server.delete_nodes([node])
            elif "add" in cmd:
                value, vtype = SCALARS[cmd["add"]]
                await add(cmd["add"], value, vtype)
            elif "delay" in cmd:
                state["delay"] = float(cmd["delay"])
            elif "jitter" in cmd:
                state["jitter"] = float(cmd["jitter"])
            elif "stats" in cmd:
                out = json.dumps(
                    {k: state[k] for k in ("published", "sent", "created", "transferred")}
                )
            elif "drop_sessions" in cmd:
                dropped = 0
                for proto in list(server.bserver.clients):
                    session = proto.processor.session
                    if session is not None and session.external:
                        await session.close_session(False)
                        dropped += 1
                    if proto.transport is not None:
                        proto.transport.close()
                out = json.dumps({"dropped": dropped})
            print(out, flush=True)


asyncio.run(main())
