#!/usr/bin/env python3
"""`compare.py BASELINE.md CHECKOUT.md TOLERANCE`: the figures of two results of
scripts/bench.sh (same sections, same run) side by side, as a markdown table with the ratio
checkout/baseline of each. Ratio columns of the results (a header with "/") are left out. A
figure of ferry's whose ratio is beyond TOLERANCE (or below 1/TOLERANCE for a figure where more
is better, a header with "/s") is marked; peers' figures (crun, runc, criu, rsync...) show how
much the machine moved between the two measurements."""
import re
import sys


def figures(path):
    out, order = {}, []
    section, header = "", []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("#"):
            section, header = line.lstrip("#").strip(), []
            continue
        if not line.startswith("|"):
            header = [] if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
            continue
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        for col, cell in zip(header[1:], cells[1:]):
            m = re.match(r"-?\d+(\.\d+)?", cell)
            if "/" in col.replace("/s", "") or not m:
                continue
            key = (section, cells[0], col)
            out[key] = float(m.group(0))
            order.append(key)
    return out, order


def main():
    base, _ = figures(sys.argv[1])
    cur, order = figures(sys.argv[2])
    tol = float(sys.argv[3])
    print("| section | what | figure | baseline | checkout | checkout/baseline | |")
    print("|---|---|---|---|---|---|---|")
    beyond = 0
    for key in order:
        if key not in base:
            continue
        b, c = base[key], cur[key]
        r = c / b if b else float("nan")
        col, row = key[2].lower(), key[1].lower()
        ours = "ferry" in col or ("ferry" in row and not re.search(r"crun|runc|criu|rsync|tar|iperf", col))
        more_is_better = "/s" in key[2]
        off = ours and b and (r < 1 / tol if more_is_better else r > tol)
        beyond += bool(off)
        note = f"beyond {tol}" if off else ("" if ours else "peer")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {b:g} | {c:g} | {r:.2f} | {note} |")
    missing = [k for k in order if k not in base] + [k for k in base if k not in cur]
    print()
    print(f"{beyond} of ferry's figures beyond the tolerance {tol}." if beyond else f"Every figure of ferry's within the tolerance {tol}.")
    if missing:
        print(f"{len(missing)} figures measured on one side only (a section failed?): " + "; ".join(" / ".join(k) for k in missing[:10]))


main()
