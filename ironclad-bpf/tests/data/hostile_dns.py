"""A DNS server that answers badly on purpose, by the first label of the question.

loop.*     an answer whose owner name is a compression pointer to itself
trunc.*    the message ends inside the second record's data
big.*      3,000 A records (about 48 KB, past what the kernel reads)
badlen.*   an A record with 5 bytes of data, then a good one
spoof.*    first a reply with the wrong id (another address), then the right one
other.*    a reply whose question is another name
good.*     one good A record

Every answer address is 10.218.N.S where N is the lab's subnet and S says which case
made it (the test checks which ones the kernel opened). Usage: hostile_dns.py ADDR N
"""
import socket
import struct
import sys

addr, subnet = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((addr, 53))
# The test sends its queries once this line arrives.
print("listening", flush=True)


def question(q):
    """The question section of query q and where it ends."""
    at = 12
    while q[at]:
        at += 1 + q[at]
    return q[12:at + 5], at + 5


def a_record(name_ptr, last):
    return name_ptr + struct.pack(">HHIH", 1, 1, 30, 4) + bytes([10, 218, subnet, last])


while True:
    q, peer = sock.recvfrom(4096)
    qid = q[:2]
    qsection, _ = question(q)
    label = q[13:13 + q[12]].decode(errors="replace")
    flags = b"\x81\x80"
    ptr = b"\xc0\x0c"

    def reply(answers, count, qid=qid, qsection=qsection):
        header = qid + flags + struct.pack(">HHHH", 1, count, 0, 0)
        return header + qsection + answers

    if label == "loop":
        # The record's owner is a pointer to the record's own first byte.
        own = 12 + len(qsection)
        rec = struct.pack(">H", 0xC000 | own) + struct.pack(">HHIH", 1, 1, 30, 4) + bytes([10, 218, subnet, 101])
        sock.sendto(reply(rec, 1), peer)
    elif label == "trunc":
        msg = reply(a_record(ptr, 102) + a_record(ptr, 103), 2)
        sock.sendto(msg[:-2], peer)
    elif label == "big":
        recs = b"".join(a_record(ptr, 104) for _ in range(3000))
        sock.sendto(reply(recs, 3000), peer)
    elif label == "badlen":
        bad = ptr + struct.pack(">HHIH", 1, 1, 30, 5) + bytes([10, 218, subnet, 105, 0])
        sock.sendto(reply(bad + a_record(ptr, 106), 2), peer)
    elif label == "spoof":
        wrong = bytes([qid[0] ^ 0xFF, qid[1]])
        sock.sendto(reply(a_record(ptr, 107), 1, qid=wrong), peer)
        sock.sendto(reply(a_record(ptr, 108), 1), peer)
    elif label == "other":
        other = b"\x05other\x04evil\x04test\x00" + struct.pack(">HH", 1, 1)
        sock.sendto(reply(a_record(ptr, 109), 1, qsection=other), peer)
    else:
        sock.sendto(reply(a_record(ptr, 110), 1), peer)
