"""An independent SOCKS5 GSS-API client (RFC 1961) on python3-gssapi (MIT Kerberos), for
socksgate's GSS-API tests: context establishment, the protection-level exchange in the RFC's
protected form or the NEC form, then a CONNECT and an echo exchange, every message after the
negotiation encapsulated (section 5) when a level other than none is granted.

    gssapi_client.py PROXY_PORT SERVICE LEVEL FORM DST_PORT PAYLOAD_FILE OUT_DIR MODE

SERVICE is a host-based name (rcmd@localhost). LEVEL: 0 none, 1 integrity, 2 confidentiality.
FORM: rfc or nec. MODE: normal; garble (a context token that is not one); truncate (a token
header announcing more than is sent, then EOF); tamper (a data message with a flipped bit).

Writes OUT_DIR/result.json ({"granted": n, "echo_ok": bool, "outcome": ...}) and the raw bytes
it sent and received on the wire (OUT_DIR/wire-sent, OUT_DIR/wire-received), which the test
searches for the payload.
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

    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    flags = [
        gssapi.RequirementFlag.mutual_authentication,
        gssapi.RequirementFlag.integrity,
        gssapi.RequirementFlag.confidentiality,
        gssapi.RequirementFlag.out_of_sequence_detection,
        gssapi.RequirementFlag.replay_detection,
    ]
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
        """The bytes that carry `data`: itself, or section 5 messages of 16 KiB at most."""
        if not protected:
            return data
        out = b""
        for i in range(0, len(data), 16384):
            wrapped = bytearray(ctx.wrap(data[i : i + 16384], encrypt).message)
            if tamper:
                wrapped[-1] ^= 1
            out += message(3, bytes(wrapped))
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

    request = b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", dst_port)
    send_plain(request)
    reply = b""
    while len(reply) < 10:
        chunk = recv_plain()
        if not chunk:
            finish("closed before the reply")
        reply += chunk
    if reply[:2] != b"\x05\x00":
        finish(f"reply {reply[1]}")
    echoed = reply[10:]

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
