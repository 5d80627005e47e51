"""Small traffic programs tests run inside namespaces (`python3 -c PROGRAM args`).

RATE_*: bandwidth's TCP stream (`SERVER addr send|recv seconds`, `CLIENT addr send|recv
seconds` prints bytes per second); PORT_*: portmap's echo servers (TCP 80, UDP 5353, answering
"tcp/udp from <peer>") and the one-shot client (`CLIENT tcp|udp host port`).
"""

RATE_SERVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
if sys.argv[2] == "send":
    block = b"x" * 65536
    end = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        c.sendall(block)
else:
    while c.recv(65536):
        pass
c.close()
"""
RATE_CLIENT = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], 5001), timeout=10)
total, start, duration = 0, time.monotonic(), float(sys.argv[3])
if sys.argv[2] == "recv":
    while True:
        data = c.recv(65536)
        if not data:
            break
        total += len(data)
else:
    block = b"x" * 65536
    while time.monotonic() - start < duration:
        c.sendall(block); total += len(block)
c.close()
print(total * 8 / (time.monotonic() - start))
"""

PORT_SERVER = r"""
import socket, sys, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 80)); s.listen(16)
    while True:
        c, peer = s.accept(); c.sendall(("tcp from %s\n" % peer[0]).encode()); c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
    while True:
        data, peer = u.recvfrom(100); u.sendto(("udp from %s\n" % peer[0]).encode(), peer)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
tcp()
"""
PORT_CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=2); print(s.recv(100).decode().strip())
    else:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
        u.sendto(b"hi", (host, port)); print(u.recvfrom(100)[0].decode().strip())
except OSError as err:
    print("failed:", err)
"""
