"""PySocks (python3-socks) UDP ASSOCIATE client: N datagrams to a UDP echo and back.

usage: pysocks_udp.py PROXY_HOST PROXY_PORT HOST PORT COUNT USER PASS
Prints "OK COUNT" when every datagram came back unchanged.
"""
import socket
import sys

import socks

phost, pport, host, port, count, user, password = sys.argv[1:]
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, phost, int(pport), username=user or None, password=password or None)
s.settimeout(10)
s.bind(("127.0.0.1", 0))
for i in range(int(count)):
    msg = (b"datagram %d|" % i) * (1 + i % 50)
    for attempt in range(6):
        s.sendto(msg, (host, int(port)))
        try:
            while True:
                data, addr = s.recvfrom(65535)
                if data == msg:
                    break
                if not data.startswith(b"datagram %d|" % i):
                    continue  # a late echo of an earlier retry
                sys.exit("datagram %d came back changed: %r" % (i, data[:100]))
            break
        except socket.timeout:
            continue
    else:
        sys.exit("datagram %d: no echo after 6 tries" % i)
    if addr[1] != int(port):
        sys.exit("datagram %d: reply header names %r, not port %s" % (i, addr, port))
s.close()
print("OK", count)
