#!/usr/bin/env python3
"""Keeps one TCP connection doing echo round trips and reports the longest pause.

usage: tcp_client.py HOST PORT SECONDS [--json]
Sends a numbered line every 20 ms and expects it echoed back. Exits 1 if the connection breaks
or an answer is wrong. Used by the demo, the benchmarks and the migration tests."""
import json, socket, sys, time

host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
as_json = "--json" in sys.argv
s = socket.create_connection((host, port), timeout=30)
n, t0 = 0, time.time()
last, gap, gap_at = t0, 0.0, 0.0
try:
    while time.time() - t0 < secs:
        n += 1
        msg = f"{n}\n".encode()
        s.sendall(msg)
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            got += chunk
        if got != msg:
            raise ValueError(f"wrong echo: sent {msg!r}, got {got!r}")
        now = time.time()
        if now - last > gap:
            gap, gap_at = now - last, now - t0
        last = now
        time.sleep(0.02)
except Exception as e:  # report, then fail
    out = {"ok": False, "round_trips": n, "error": str(e), "longest_pause_ms": round(gap * 1000)}
    print(json.dumps(out) if as_json else f"client: FAILED after {n} round trips: {e}")
    sys.exit(1)
out = {"ok": True, "round_trips": n, "longest_pause_ms": round(gap * 1000), "pause_at_s": round(gap_at, 1)}
print(json.dumps(out) if as_json else
      f"client: {n} round trips on one connection, longest pause {out['longest_pause_ms']} ms")
