"""PySocks (python3-socks) TCP client: GET one body through a SOCKS proxy, write it to stdout.

usage: pysocks_tcp.py socks4|socks5 PROXY_HOST PROXY_PORT HOST PORT PATH USER PASS RDNS
USER/PASS may be empty; RDNS is 1 to let the proxy resolve HOST (SOCKS4a / SOCKS5 domain).
"""
import socket
import sys

import socks

kind, phost, pport, host, port, path, user, password, rdns = sys.argv[1:]
family = socket.AF_INET6 if ":" in phost else socket.AF_INET
s = socks.socksocket(family, socket.SOCK_STREAM)
s.set_proxy(
    {"socks4": socks.SOCKS4, "socks5": socks.SOCKS5}[kind],
    phost,
    int(pport),
    rdns=rdns == "1",
    username=user or None,
    password=password or None,
)
s.settimeout(60)
s.connect((host, int(port)))
s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
chunks = []
while True:
    data = s.recv(65536)
    if not data:
        break
    chunks.append(data)
s.close()
response = b"".join(chunks)
head, _, body = response.partition(b"\r\n\r\n")
if not head.startswith(b"HTTP/1.1 200"):
    sys.exit("unexpected response head: %r" % head[:200])
sys.stdout.buffer.write(body)
