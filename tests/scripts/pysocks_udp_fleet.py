"""PySocks (python3-socks) UDP ASSOCIATE through a balanced fleet: ASSOCIATIONS associations
held open at once, COUNT datagrams each to a UDP echo and back.

usage: pysocks_udp_fleet.py PROXY_HOST PROXY_PORT HOST PORT ASSOCIATIONS COUNT
Prints "relay IP:PORT" per association, then "OK ASSOCIATIONS COUNT".

PySocks sends its datagrams to the proxy's host with the relay's port, ignoring the address
the reply advertises. Behind a TCP balancer the proxy's host is the balancer, which does not
carry UDP, so this script records the advertised relay (RFC 1928: BND.ADDR) and sends there,
as a client that follows the RFC does; PySocks still does the handshake and encapsulation.
"""
import socket
import sys

import socks

phost, pport, host, port, associations, count = sys.argv[1:]
original_request = socks.socksocket._SOCKS5_request


def request(self, conn, cmd, dst):
    resolved, relay = original_request(self, conn, cmd, dst)
    if cmd == b"\x03":
        self.advertised_relay = relay
    return resolved, relay


socks.socksocket._SOCKS5_request = request

held = []
for a in range(int(associations)):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, phost, int(pport))
    s.settimeout(5)
    s.bind(("127.0.0.1", 0))
    socket.socket.connect(s, s.advertised_relay)
    print("relay %s:%d" % s.advertised_relay, flush=True)
    for i in range(int(count)):
        msg = (b"association %d datagram %d|" % (a, i)) * (1 + i % 40)
        for attempt in range(4):
            s.sendto(msg, (host, int(port)))
            try:
                data, addr = s.recvfrom(65535)
                if data != msg:
                    sys.exit("association %d datagram %d came back changed: %r" % (a, i, data[:80]))
                break
            except socket.timeout:
                continue
        else:
            sys.exit("association %d datagram %d: no echo after 4 tries" % (a, i))
    held.append(s)  # keep the association open so the balancer spreads the next one
for s in held:
    s.close()
print("OK", associations, count)
