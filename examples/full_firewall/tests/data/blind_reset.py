"""A client in a namespace and a blind attacker beside it (scapy).

Usage: blind_reset.py IFACE SRC HOST PORT WAIT

The client connects from SRC to HOST:PORT and exchanges a line. The attacker, who knows
the connection's addresses and ports but not its sequence numbers, then forges from SRC:
a RST and a FIN half the sequence space away from the client's next sequence number, a
RST+ACK a quarter away, and a RST inside the window but not at its start (which the
receiver answers with a challenge ACK). After WAIT seconds (past the firewall's closing
timeout) the client sends a second line: it prints `after <echo>`, or `after lost` when
the connection no longer carries it.
"""
import socket
import sys
import time

from scapy.all import IP, TCP, AsyncSniffer, IPv6, send

iface, src, host, port, wait = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
v6 = ":" in host
# No BPF filter (compiling one needs libpcap or tcpdump): the client's own segments are
# picked out below.
sniffer = AsyncSniffer(iface=iface, store=True)
sniffer.start()
time.sleep(1.0)
family = socket.AF_INET6 if v6 else socket.AF_INET
client = socket.socket(family, socket.SOCK_STREAM)
client.bind((src, 0))
client.settimeout(5)
client.connect((host, port))
client.sendall(b"ping1\n")
assert client.recv(100) == b"ping1\n"
time.sleep(0.5)
packets = sniffer.stop()
sport = client.getsockname()[1]
mine = [p for p in packets if TCP in p and p[TCP].sport == sport and p[TCP].dport == port]
last = mine[-1][TCP]
# The client's next sequence number: after the last byte, SYN or FIN it sent.
step = len(last.payload) + (1 if int(last.flags) & 0x03 else 0)
nxt = (last.seq + step) & 0xFFFFFFFF
l3 = IPv6(src=src, dst=host) if v6 else IP(src=src, dst=host)


def forge(flags, seq):
    send(l3 / TCP(sport=sport, dport=port, flags=flags, seq=seq & 0xFFFFFFFF, ack=last.ack, window=502), verbose=0)


forge("R", nxt + 0x80000000)
forge("F", nxt + 0x80000000)
forge("RA", nxt + 0x40000000)
forge("R", nxt + 1000)
print("forged", flush=True)
time.sleep(wait)
try:
    client.sendall(b"ping2\n")
    print("after", client.recv(100).decode().strip(), flush=True)
except OSError:
    print("after lost", flush=True)
