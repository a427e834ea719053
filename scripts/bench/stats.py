#!/usr/bin/env python3
"""Summaries for scripts/bench.sh: `stats.py FILE` prints "median min max n" of the numbers in
FILE (one per line)."""
import statistics, sys

vals = [float(l) for l in open(sys.argv[1]) if l.strip()]
if not vals:
    print("nan nan nan 0")
else:
    print(f"{statistics.median(vals):.1f} {min(vals):.1f} {max(vals):.1f} {len(vals)}")
