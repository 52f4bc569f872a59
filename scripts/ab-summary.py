#!/usr/bin/env python3
"""Side by side: the dsa_bench JSON files of scripts/gpu-ab.sh, one column per tree.

Usage: scripts/ab-summary.py TREE=FILE[,FILE...] ...   (the first tree is the base)

Each cell is the median over the tree's files (its rounds) of a workload's latency, with the spread over
the rounds (max - min) when there are several, and the change against the base's median. A run that failed
(no latency: dsa_bench writes 0) counts in no median; "FAIL" marks a cell with a round whose SPEC 5 check
failed (a timing-* patch's, by design).
"""
import json
import statistics
import sys


def latencies(path):
    """{workload: (latency us or None when the run failed, whether its check passed)}"""
    with open(path) as f:
        results = json.load(f)["results"]
    out = {}
    for r in results:
        us = r.get("latency_us")
        out[r["workload"]] = (us if us and us > 0 else None, r.get("pass", True))
    return out


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    trees = []  # (name, {workload: [latency per round]}, {workloads with a failed check})
    for arg in argv:
        name, _, files = arg.partition("=")
        runs, failed = {}, set()
        for path in filter(None, files.split(",")):
            try:
                for workload, (us, passed) in latencies(path).items():
                    runs.setdefault(workload, [])
                    if us is not None:
                        runs[workload].append(us)
                    if not passed:
                        failed.add(workload)
            except (OSError, ValueError, KeyError) as e:
                print(f"ab-summary: {path}: {e}", file=sys.stderr)
        trees.append((name, runs, failed))
    workloads = []
    for _, runs, _ in trees:
        workloads += [w for w in runs if w not in workloads]
    rounds = max((len(v) for _, runs, _ in trees for v in runs.values()), default=0)
    print(f"median latency us over {rounds} round(s)" + (" (max - min in brackets)" if rounds > 1 else "") +
          "; % against the first tree")
    print("| workload | " + " | ".join(name for name, _, _ in trees) + " |")
    print("|---" * (len(trees) + 1) + "|")
    base_runs = trees[0][1]
    for w in workloads:
        base = statistics.median(base_runs[w]) if base_runs.get(w) else None
        cells = []
        for i, (_, runs, failed) in enumerate(trees):
            v = runs.get(w)
            if not v:
                cells.append("FAIL" if w in failed else "-")
                continue
            m = statistics.median(v)
            cell = f"{m:.1f}"
            if len(v) > 1:
                cell += f" [{max(v) - min(v):.1f}]"
            if i > 0 and base:
                cell += f" ({100.0 * (m - base) / base:+.1f}%)"
            if w in failed:
                cell += " FAIL"
            cells.append(cell)
        print(f"| {w} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
