#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/: a handful of small valid messages each,
from the RFC 1928/1929/1961 and SOCKS4/4a byte layouts. Rerun after changing a seed:
    python3 gen_corpus.py
File names are the first 16 hex digits of SHA-1 of the content.

udp_reassembly and rules_eval take `arbitrary`-encoded structures, which have no readable
byte layout: their seeds are a few small inputs kept from early fuzzing runs instead."""

import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def v4(a, port):
    return bytes(int(x) for x in a.split(".")) + struct.pack(">H", port)


def atyp_v4(a, port):
    return b"\x01" + v4(a, port)


def atyp_v6(last, port):
    return b"\x04" + bytes(15) + bytes([last]) + struct.pack(">H", port)


def atyp_dom(name, port):
    return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)


GREETING = b"\x05\x01\x00"
CONNECT_V4 = b"\x05\x01\x00" + atyp_v4("127.0.0.1", 8080)
CONNECT_V6 = b"\x05\x01\x00" + atyp_v6(1, 443)
CONNECT_DOM = b"\x05\x01\x00" + atyp_dom(b"example.com", 80)
LONG_DOM = b"\x05\x01\x00" + atyp_dom(b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 63, 443)
BIND = b"\x05\x02\x00" + atyp_v4("192.0.2.7", 21)
UDP = b"\x05\x03\x00" + atyp_v4("0.0.0.0", 0)
USERPASS = b"\x01\x05alice\x06s3cret"
SOCKS4 = b"\x04\x01" + struct.pack(">H", 80) + bytes([66, 102, 7, 99]) + b"fred\x00"
SOCKS4A = b"\x04\x01" + struct.pack(">H", 80) + bytes([0, 0, 0, 1]) + b"fred\x00example.com\x00"
SOCKS4_BIND = b"\x04\x02" + struct.pack(">H", 21) + bytes([192, 0, 2, 7]) + b"\x00"
REPLY_V4 = b"\x05\x00\x00" + atyp_v4("10.0.0.2", 39551)
REPLY_REFUSED = b"\x05\x05\x00" + atyp_v4("0.0.0.0", 0)
REPLY_V6 = b"\x05\x00\x00" + atyp_v6(1, 1080)
REPLY_DOM = b"\x05\x00\x00" + atyp_dom(b"proxy.example", 1080)
S4_GRANTED = b"\x00\x5a" + struct.pack(">H", 4660) + bytes([10, 1, 2, 3])
S4_REJECTED = b"\x00\x5b" + bytes(6)
S4_VN4 = b"\x04\x5a" + struct.pack(">H", 80) + bytes([127, 0, 0, 1])


def hdr(*header):
    """State-machine input header: length octet then the header octets."""
    return bytes([len(header)]) + bytes(header)


# Server config flags are XORed with 0b1001 (0 = no_auth + socks4).
USER_PASS_ONLY = 0b0010 ^ 0b1001
GSSAPI_ONLY = 0b0100 ^ 0b1001
ALL = 0b1111 ^ 0b1001

UDP_V4 = b"\x00\x00\x00" + atyp_v4("192.0.2.7", 53) + b"query"
UDP_V6 = b"\x00\x00\x00" + atyp_v6(1, 53)
UDP_DOM = b"\x00\x00\x00" + atyp_dom(b"example.com", 53) + b"\x12\x34"
UDP_FRAG1 = b"\x00\x00\x01" + atyp_v4("192.0.2.7", 53) + b"hello, "
UDP_FRAG2_LAST = b"\x00\x00\x82" + atyp_v4("192.0.2.7", 53) + b"world"

SEEDS = {
    "udp_header": [UDP_V4, UDP_V6, UDP_DOM, UDP_FRAG1, UDP_FRAG2_LAST],
    "method_request": [GREETING, b"\x05\x02\x00\x02", b"\x05\x03\x00\x01\x02", b"\x05\x01\x80"],
    "method_reply": [b"\x05\x00", b"\x05\x02", b"\x05\xff", b"\x05\x01"],
    "userpass_request": [USERPASS, b"\x01\x01u\x01p", b"\x01\x03bob\x07hunter2"],
    "userpass_reply": [b"\x01\x00", b"\x01\x01"],
    "gssapi_message": [b"\x01\x01\x00\x03\xaa\xbb\xcc", b"\x01\xff", b"\x01\x02\x00\x01\x01",
                       b"\x01\x03\x00\x00"],
    "socks5_request": [CONNECT_V4, CONNECT_V6, CONNECT_DOM, LONG_DOM, BIND, UDP],
    "socks5_reply": [REPLY_V4, REPLY_REFUSED, REPLY_V6, REPLY_DOM],
    "socks4_request": [SOCKS4, SOCKS4A, SOCKS4_BIND],
    "socks4_reply": [S4_GRANTED, S4_REJECTED, S4_VN4],
    "server_chunks": [
        hdr() + GREETING + CONNECT_V4,
        hdr() + GREETING + CONNECT_V4 + b"GET / HTTP/1.0\r\n\r\n",
        hdr() + GREETING + CONNECT_V6,
        hdr() + GREETING + BIND,
        hdr() + GREETING + UDP,
        hdr() + SOCKS4,
        hdr() + SOCKS4A + b"payload",
        hdr() + SOCKS4_BIND,
        hdr(USER_PASS_ONLY) + b"\x05\x02\x00\x02" + USERPASS + CONNECT_DOM,
        hdr(GSSAPI_ONLY) + b"\x05\x01\x01" + b"\x01\x01\x00\x02\xaa\xbb" + b"\x01\x01\x00\x01\xcc",
        # GSS-API, NEC accepted (policy octet 8), a 12 KiB context token.
        hdr(GSSAPI_ONLY, 8) + b"\x05\x01\x01" + b"\x01\x01\x30\x00" + b"\xa1" * 0x3000,
        # All methods, default GSS-API policy, chunks of 2, 3, 5, 7, 11, 13, 17, 19 bytes,
        # transmit sizes 1-4.
        hdr(ALL, 0, 1, 2, 4, 6, 10, 12, 16, 18, 0, 1, 2, 3) + b"\x05\x02\x00\x02" + USERPASS + LONG_DOM,
    ],
    # [number of chunk sizes, sizes…, §5 stream…]
    "gssapi_stream": [
        b"\x00" + b"\x01\x03\x00\x03abc" + b"\x01\x03\x00\x00",
        b"\x02\x02\x06" + b"\x01\x03\x01\x2c" + bytes(range(256)) + bytes(44) + b"\x01\xff",
        b"\x01\x00" + b"\x01\x03\x00\x01x" + b"\x01\x01\x00\x00",
        b"\x00" + b"\x02\x03\x00\x00",
    ],
    "client_chunks": [
        # SOCKS5 CONNECT 0.0.0.0:0, no credentials.
        hdr() + b"\x05\x00" + REPLY_V4 + b"hi",
        hdr() + b"\x05\x00" + REPLY_REFUSED,
        hdr() + b"\x05\x00" + REPLY_DOM,
        # SOCKS5 with alice/s3cret, CONNECT 127.0.0.1:80.
        hdr(0, 0, 1, 5, 6, *b"alice", *b"s3cret", 0, 127, 0, 0, 1, 0, 80)
        + b"\x05\x02\x01\x00" + REPLY_V4,
        # SOCKS5 BIND (command 2 = 3 ^ 1): two replies.
        hdr(0, 3) + b"\x05\x00" + REPLY_V4 + REPLY_V6,
        # SOCKS5 GSS-API, NEC form asking for confidentiality (last header octet 5): the
        # proxy's token, its NEC answer, then the (unwrapped) reply.
        hdr(0, 0, 0, 0, 0, 0, 127, 0, 0, 1, 0, 80, 0, *([0] * 12), 5)
        + b"\x05\x01" + b"\x01\x01\x00\x02\xaa\xbb" + b"\x01\x02\x00\x01\x02" + REPLY_V4,
        # SOCKS4 CONNECT 0.0.0.0:0.
        hdr(1) + S4_GRANTED,
        hdr(1) + S4_VN4 + b"data",
        # SOCKS4a CONNECT example.com:80 as fred.
        hdr(2, 0, 0, 0, 0, 2, 11, *b"example.com", 0, 80, 4, *b"fred") + S4_GRANTED,
    ],
}

for target, seeds in SEEDS.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(seed)
