"""An independent SOCKS5 GSS-API client (RFC 1961) on python3-gssapi (MIT Kerberos), for
socksgate's GSS-API tests: context establishment, the protection-level exchange in the RFC's
protected form or the NEC form, then a CONNECT and an echo exchange, every message after the
negotiation encapsulated (section 5) when a level other than none is granted; or a UDP
ASSOCIATE with every datagram wrapped (section 5: one message per datagram), or a BIND with
this script as the peer that connects back.

    gssapi_client.py PROXY_PORT SERVICE LEVEL FORM DST_PORT PAYLOAD_FILE OUT_DIR MODE

SERVICE is a host-based name (rcmd@localhost). LEVEL: 0 none, 1 integrity, 2 confidentiality.
FORM: rfc or nec. MODE: normal; garble (a context token that is not one); truncate (a token
header announcing more than is sent, then EOF); stall (the same header and part of the token,
then nothing while the connection stays open); oversize (a message announcing the most the
framing allows, 65,535 octets, all of them garbage); expire (the context token made at once,
sent after GSSAPI_CLIENT_WAIT seconds, once the ticket has expired); tamper (a data message
with a flipped bit);
udp (UDP ASSOCIATE, datagrams of the payload to the UDP echo at DST_PORT and back);
udp-tamper (as udp, with a datagram whose token has a flipped bit, one replayed, one that is
not a section 5 message and one sent unwrapped, each followed by a good one); bind (BIND,
then a peer connects to the announced address; the payload both ways).

Writes OUT_DIR/result.json ({"granted": n, "echo_ok": bool, "outcome": ...}) and the raw bytes
it sent and received on the wire (OUT_DIR/wire-sent, OUT_DIR/wire-received), which the test
searches for the payload. For udp modes, result.json also has "echoed" (datagrams echoed
intact) and "bad_answered" (answers to the bad datagrams: none expected).
"""

import json
import os
import socket
import struct
import sys
import threading

import gssapi

port, service, level, form, dst_port, payload_file, out_dir, mode = sys.argv[1:9]
port, level, dst_port = int(port), int(level), int(dst_port)
payload = open(payload_file, "rb").read()
sent_log = open(os.path.join(out_dir, "wire-sent"), "wb")
recv_log = open(os.path.join(out_dir, "wire-received"), "wb")
result = {"granted": None, "echo_ok": False, "outcome": "started"}


def finish(outcome):
    result["outcome"] = outcome
    json.dump(result, open(os.path.join(out_dir, "result.json"), "w"))
    sys.exit(0)


sock = socket.create_connection(("127.0.0.1", port), timeout=30)


def send(data):
    sent_log.write(data)
    sent_log.flush()
    sock.sendall(data)


def recv_exact(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} octets")
        recv_log.write(chunk)
        recv_log.flush()
        data += chunk
    return data


def recv_message(expect_type):
    ver, mtyp = recv_exact(2)
    if ver == 1 and mtyp == 0xFF:
        raise ConnectionAbortedError("server sent the GSS-API abort message")
    (length,) = struct.unpack("!H", recv_exact(2))
    if ver != 1 or mtyp != expect_type:
        raise ValueError(f"unexpected message VER={ver} MTYP={mtyp}")
    return recv_exact(length)


def message(mtyp, token):
    return bytes([1, mtyp]) + struct.pack("!H", len(token)) + token


def run_udp(read_reply, send_plain, seal):
    """UDP ASSOCIATE; the payload in datagrams of up to 1200 octets to the echo and back."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    request = b"\x05\x03\x00\x01" + socket.inet_aton("127.0.0.1")
    send_plain(request + struct.pack("!H", udp.getsockname()[1]))
    reply, _ = read_reply(b"")
    relay = (socket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
    header = b"\x00\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", dst_port)

    def datagram(data, tamper=False):
        """The datagram carrying `data` to the echo: one section 5 message when protected."""
        plain = header + data
        if not protected:
            return plain
        wrapped = bytearray(ctx.wrap(plain, encrypt).message)
        if tamper:
            wrapped[len(wrapped) // 2] ^= 1
        return message(3, bytes(wrapped))

    def exchange(d):
        """Sends datagram `d`; returns the payload of the answer, or None after 1 s."""
        sent_log.write(d)
        sent_log.flush()
        udp.sendto(d, relay)
        udp.settimeout(1 if mode == "udp-tamper" else 5)
        try:
            got, _ = udp.recvfrom(70000)
        except socket.timeout:
            return None
        recv_log.write(got)
        recv_log.flush()
        if protected:
            if got[:2] != b"\x01\x03" or struct.unpack("!H", got[2:4])[0] != len(got) - 4:
                raise ValueError("answer is not one section 5 message")
            got = ctx.unwrap(got[4:]).message
        if got[:10] != header:
            raise ValueError(f"answer header {got[:10]!r}, not {header!r}")
        return got[10:]

    chunks = [payload[i : i + 1200] for i in range(0, len(payload), 1200)]
    result["echoed"] = 0
    result["bad_answered"] = 0
    for i, chunk in enumerate(chunks):
        if mode == "udp-tamper" and i < 4 and protected:
            good = datagram(chunk)
            bad = [
                datagram(chunk, tamper=True),
                good,  # sent twice below: the second is a replay
                bytes([1, 2]) + good[2:],  # MTYP 2: not a data message
                header + chunk,  # no wrapping at all
            ][i]
            if i == 1:
                if exchange(good) == chunk:
                    result["echoed"] += 1
            if exchange(bad) is not None:
                result["bad_answered"] += 1
            if i == 1:
                continue
        if exchange(datagram(chunk)) == chunk:
            result["echoed"] += 1
    result["echo_ok"] = result["echoed"] == len(chunks)
    finish("done")


def run_bind(read_reply, send_plain, recv_plain):
    """BIND for any port of 127.0.0.1; a peer connects to the first reply's address, then
    the payload goes peer -> client and client -> peer."""
    send_plain(b"\x05\x02\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
    first, rest = read_reply(b"")
    listening = (socket.inet_ntoa(first[4:8]), struct.unpack("!H", first[8:10])[0])
    peer = socket.create_connection(listening, timeout=30)
    second, rest = read_reply(rest)
    if second[8:10] != struct.pack("!H", peer.getsockname()[1]):
        finish("second reply names another peer")
    writer = threading.Thread(target=peer.sendall, args=(payload,))
    writer.start()
    got = rest
    while len(got) < len(payload):
        chunk = recv_plain()
        if not chunk:
            break
        got += chunk
    writer.join()
    down_ok = got == payload
    send_plain(payload[::-1])
    back = b""
    while len(back) < len(payload):
        chunk = peer.recv(65536)
        if not chunk:
            break
        back += chunk
    result["echo_ok"] = down_ok and back == payload[::-1]
    finish("done")


try:
    send(b"\x05\x01\x01")
    if recv_exact(2) != b"\x05\x01":
        finish("method refused")

    if mode == "garble":
        send(message(1, b"this is not a kerberos token at all"))
        try:
            recv_message(1)
            finish("garbled token accepted")
        except ConnectionAbortedError:
            finish("aborted")
        except EOFError:
            finish("closed")

    if mode == "oversize":
        send(message(1, bytes(range(256)) * 255 + bytes(range(255))))
        try:
            recv_message(1)
            finish("oversized garbage accepted")
        except ConnectionAbortedError:
            finish("aborted")
        except (EOFError, ConnectionResetError):
            finish("closed")

    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    flags = [
        gssapi.RequirementFlag.mutual_authentication,
        gssapi.RequirementFlag.integrity,
        gssapi.RequirementFlag.confidentiality,
        gssapi.RequirementFlag.replay_detection,
    ]
    if not mode.startswith("udp"):
        # Datagrams may be lost or reordered: sequence checking is for streams only.
        flags.append(gssapi.RequirementFlag.out_of_sequence_detection)
    ctx = gssapi.SecurityContext(name=name, usage="initiate", flags=flags)
    token = ctx.step()

    if mode == "truncate":
        send(bytes([1, 1, 0xFF, 0xFF]) + token[:100])
        sock.shutdown(socket.SHUT_WR)
        try:
            recv_message(1)
            finish("truncated token answered")
        except (ConnectionAbortedError, EOFError, ConnectionResetError):
            finish("closed")

    if mode == "stall":
        send(bytes([1, 1, 0xFF, 0xFF]) + token[:100])
        try:
            recv_message(1)
            finish("stalled token answered")
        except (ConnectionAbortedError, EOFError, ConnectionResetError):
            finish("closed")

    if mode == "expire":
        import time

        time.sleep(float(os.environ["GSSAPI_CLIENT_WAIT"]))

    send(message(1, token))
    while True:
        reply = recv_message(1)
        if not ctx.complete:
            token = ctx.step(reply)
            if token:
                send(message(1, token))
        if ctx.complete:
            break

    if form == "nec":
        send(message(2, bytes([level])))
        granted = recv_message(2)[0]
    else:
        send(message(2, ctx.wrap(bytes([level]), False).message))
        granted = ctx.unwrap(recv_message(2)).message[0]
    result["granted"] = granted
    protected = granted != 0
    encrypt = granted == 2

    def seal(data, tamper=False):
        """The bytes that carry `data`: itself, or section 5 messages of plaintext sizes
        cycling from 65,000 octets (a token near the 65,535 the framing allows) down to one,
        so the server's receive buffer meets large and small messages mixed."""
        if not protected:
            return data
        out = b""
        sizes = [65000, 1, 16384, 300]
        i = k = 0
        while i < len(data):
            n = sizes[k % len(sizes)]
            k += 1
            wrapped = bytearray(ctx.wrap(data[i : i + n], encrypt).message)
            if tamper:
                wrapped[-1] ^= 1
            out += message(3, bytes(wrapped))
            i += n
        return out

    def send_plain(data, tamper=False):
        send(seal(data, tamper))

    def recv_plain():
        if not protected:
            data = sock.recv(65536)
            recv_log.write(data)
            return data
        try:
            return ctx.unwrap(recv_message(3)).message
        except EOFError:
            return b""

    def read_reply(pending):
        reply = pending
        while len(reply) < 10:
            chunk = recv_plain()
            if not chunk:
                finish("closed before the reply")
            reply += chunk
        if reply[:2] != b"\x05\x00":
            finish(f"reply {reply[1]}")
        if reply[3] != 1:
            finish("reply with an address other than IPv4")
        return reply[:10], reply[10:]

    if mode.startswith("udp"):
        run_udp(read_reply, send_plain, seal)
    if mode == "bind":
        run_bind(read_reply, send_plain, recv_plain)

    request = b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", dst_port)
    send_plain(request)
    _, echoed = read_reply(b"")

    if mode == "tamper":
        send_plain(payload, tamper=True)
        try:
            while recv_plain():
                pass
        except (ConnectionResetError, ConnectionAbortedError, OSError):
            pass
        finish("closed")

    # Sealed here, sent by a thread while this one reads the echo (a large payload would
    # otherwise fill both directions' buffers); the context is used by this thread only.
    sealed = seal(payload)
    writer = threading.Thread(target=send, args=(sealed,))
    writer.start()
    while len(echoed) < len(payload):
        chunk = recv_plain()
        if not chunk:
            break
        echoed += chunk
    writer.join()
    result["echo_ok"] = echoed == payload
    finish("done")
except ConnectionAbortedError:
    finish("aborted")
except EOFError:
    finish("closed")
except gssapi.exceptions.GSSError as e:
    result["error"] = str(e)
    finish("gssapi error")
