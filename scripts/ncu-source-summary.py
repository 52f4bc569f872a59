#!/usr/bin/env python3
"""Summarises an Nsight Compute source page (`ncu --import R --page source --print-source sass --csv`):
warp-stall samples by reason, the instructions with the most samples (and their top reasons), and the
executed-instruction mix. Usage: scripts/ncu-source-summary.py source.csv [--top N]"""
import argparse
import collections
import csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.reader(f))
    header_at = next(i for i, r in enumerate(rows) if "Source" in r and "Address" in r)
    header, data = rows[header_at], [r for r in rows[header_at + 1:] if len(r) == len(rows[header_at])]
    col = {name: i for i, name in enumerate(header)}
    samples = col["Warp Stall Sampling (All Samples)"]
    executed = col["Instructions Executed"]
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]

    def num(row, i):
        try:
            return int(float(row[i] or 0))
        except ValueError:
            return 0

    total = sum(num(r, samples) for r in data) or 1
    print(f"warp-stall samples: {total}, instructions executed (warp level): {sum(num(r, executed) for r in data)}")
    by_reason = collections.Counter({h: sum(num(r, col[h]) for r in data) for h in reasons})
    print("by reason: " + ", ".join(f"{h[6:]} {100 * n / total:.1f}%" for h, n in by_reason.most_common(10)))
    print(f"\ntop {args.top} instructions by samples (index, % of samples, executed, SASS, top reasons):")
    for i in sorted(range(len(data)), key=lambda i: -num(data[i], samples))[:args.top]:
        r = data[i]
        top = sorted(((h[6:], num(r, col[h])) for h in reasons), key=lambda x: -x[1])[:3]
        print(f"{i:6d} {100 * num(r, samples) / total:5.1f}% {num(r, executed):>12d}  {r[col['Source']].strip()[:60]:60s} "
              + ", ".join(f"{h} {n}" for h, n in top if n))
    mix = collections.Counter()
    for r in data:
        words = r[col["Source"]].split()
        if not words:
            continue
        op = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
        mix[op.split(".")[0]] += num(r, executed)
    executed_total = sum(mix.values()) or 1
    print("\nexecuted-instruction mix: " + ", ".join(f"{op} {100 * n / executed_total:.1f}%" for op, n in mix.most_common(20)))


if __name__ == "__main__":
    main()
