#!/usr/bin/env python3
"""Writes to a redis server on one connection and checks that no acknowledged write is lost.

usage: redis_writer.py HOST PORT SECONDS [--until FILE] [--json]
Appends a numbered value to the list ferry:acked every 10 ms (RPUSH); the server's reply is the
list's new length, which must be the number of values acknowledged so far. At the end it reads
the whole list back (LRANGE) on the same connection and checks that it holds exactly the
acknowledged values, in order. Exits 1 if the connection breaks, a reply is wrong or an
acknowledged write is missing. With --until it stops early once FILE exists. Used by the
tests of unprivileged containers."""
import json, os, socket, sys, time

host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
as_json = "--json" in sys.argv
until = sys.argv[sys.argv.index("--until") + 1] if "--until" in sys.argv else None
KEY = b"ferry:acked"


def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def reply(f):
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed by the server")
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ValueError("server error: " + rest.decode())
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [reply(f) for _ in range(int(rest))]
    raise ValueError(f"unexpected reply {line!r}")


s = socket.create_connection((host, port), timeout=30)
f = s.makefile("rb")
s.sendall(command("DEL", KEY))
reply(f)
acked, t0 = 0, time.time()
last, gap, gap_at = t0, 0.0, 0.0
try:
    while time.time() - t0 < secs and not (until and os.path.exists(until)):
        s.sendall(command("RPUSH", KEY, acked + 1))
        n = reply(f)
        if n != acked + 1:
            raise ValueError(f"RPUSH of {acked + 1} answered length {n}")
        acked += 1
        now = time.time()
        if now - last > gap:
            gap, gap_at = now - last, now - t0
        last = now
        time.sleep(0.01)
    s.sendall(command("LRANGE", KEY, 0, -1))
    held = [int(v) for v in reply(f)]
    missing = sorted(set(range(1, acked + 1)) - set(held))
    if held != list(range(1, acked + 1)):
        raise ValueError(f"{len(missing)} acknowledged writes missing (first {missing[:5]}), {len(held)} values held for {acked} acknowledged")
except Exception as e:  # report, then fail
    out = {"ok": False, "acknowledged": acked, "error": str(e), "longest_pause_ms": round(gap * 1000)}
    print(json.dumps(out) if as_json else f"redis writer: FAILED after {acked} acknowledged writes: {e}")
    sys.exit(1)
out = {"ok": True, "acknowledged": acked, "lost": 0, "longest_pause_ms": round(gap * 1000), "pause_at_s": round(gap_at, 1)}
print(json.dumps(out) if as_json else
      f"redis writer: {acked} acknowledged writes on one connection, none lost, longest pause {out['longest_pause_ms']} ms")
