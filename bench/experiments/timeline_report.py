#!/usr/bin/env python3
"""Summarises the decode timeline that diag-decode-timeline.patch makes dsa_bench write ($DSA_TIMELINE).

Usage: timeline_report.py FILE   (segments 0-2 of each CTA; levels 1-2 of its last selection in registers)

Each line of FILE is one CTA of one workload's last timed replay: "cta PID NAME LATENCY_US c clear_entry clear_exit
info[8] clock[48] time[48]" (one dsa_bench run per PID, reported apart) (clock: the SM's clock64 at each mark, time:
%globaltimer in ns; 0 = mark not reached); a line "tree NAME round R" (scripts/gpu-ab.sh, after each run) names the
tree of the runs before it. Within a CTA, phases come from clock64 (cycle-exact; converted with the clock rate
fitted over all CTAs); CTAs are placed against each other by %globaltimer (whose update interval may be ~1 us: each
CTA's start is taken as the latest start that all its marks allow). Times are us from the first clear CTA's entry
(without a clear kernel, as in a single launch: the first fused CTA's).
"""
import statistics
import sys
from collections import defaultdict

SLOTS = 48
NAMES = {0: "fused CTA entry", 46: "self-plan: own clears done", 47: "grid barrier passed (clears)",
         36: "self-plan: seq_lens in hand", 37: "self-plan: units scanned",
         45: "self-plan: aligned plan from registers tried",
         38: "self-plan: even plan written", 39: "self-plan: barrier passed", 1: "plan ready", 2: "first TMA issued",
         4: "first tile landed", 3: "last tile issued", 5: "consumers done", 6: "after griddep wait",
         7: "producer: first window loaded", 15: "producer: first entry in hand", 23: "plan taken from the cache"}
SEG = ["setup done", "scored", "part-end passes", "before ticket", "ticket known", "selection start",
       "selection end"]
SEL = {40: "keys in hand / level-1 bin", 41: "refined / list built", 42: "kept in order", 43: "selected",
       44: "output written", 32: "level 1 counted", 33: "level 1 bin", 34: "level 2 counted", 35: "level 2 bin"}


# Phases within a CTA: (label, from mark, to mark).
PHASES = [("entry -> plan ready", 0, 1), ("entry -> own clears done", 0, 46), ("entry -> seq_lens in hand", 0, 36),
          ("seq_lens -> units scanned", 36, 37), ("units scanned -> aligned plan from registers", 37, 45),
          ("aligned plan from registers -> even plan written", 45, 38), ("units scanned -> even plan written", 37, 38),
          ("even plan -> barrier passed", 38, 39), ("barrier -> plan ready (aligned plan)", 39, 1),
          ("plan ready -> first TMA", 1, 2), ("plan ready -> producer's first window", 1, 7),
          ("first window -> first entry in hand", 7, 15), ("first entry in hand -> first TMA", 15, 2),
          ("first TMA -> first tile", 2, 4),
          ("plan ready -> seg 0 setup done", 1, 8), ("seg 0: setup -> scored", 8, 9),
          ("seg 0: scored -> part-end done", 9, 10), ("seg 0: part-end -> before ticket", 10, 11),
          ("seg 0: before ticket -> known", 11, 12), ("seg 0: ticket -> selection start", 12, 13),
          ("seg 0: selection", 13, 14), ("seg 1: setup -> scored", 16, 17), ("seg 1: selection", 21, 22)]


def load(path):
    by = defaultdict(list)
    tree, pending = {}, []  # a run's tree, from the "tree NAME round R" line written after it (scripts/gpu-ab.sh)
    for line in open(path):
        f = line.split()
        if f[:1] == ["tree"] and len(f) >= 4:
            tree.update((pid, f"{f[1]} round {f[3]}") for pid in pending)
            pending = []
            continue
        if not f or f[0] != "cta":
            continue
        pid, name, lat, c = f[1], f[2], float(f[3]), int(f[4])
        if pid not in pending:
            pending.append(pid)
        clear = (int(f[5]), int(f[6]))
        info = [int(x) for x in f[7:15]]
        clk = [int(x) for x in f[15:15 + SLOTS]]
        tim = [int(x) for x in f[15 + SLOTS:15 + 2 * SLOTS]]
        by[(name, pid)].append(dict(c=c, lat=lat, clear=clear, info=info, clk=clk, tim=tim))
    return {f"{name} (run {pid}" + (f", {tree[pid]}" if pid in tree else "") + ")": ctas
            for (name, pid), ctas in by.items()}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(name, ctas):
    fused = [x for x in ctas if x["clk"][0] and x["clk"][6]]
    if not fused:
        print(f"== {name}: no fused CTA marks")
        return
    # Clock rate (cycles per ns) from each CTA's entry-to-exit span, all CTAs together.
    dc = sum(x["clk"][6] - x["clk"][0] for x in fused)
    dt = sum(x["tim"][6] - x["tim"][0] for x in fused)
    rate = dc / dt if dt > 0 else 1.98
    clears = [x["clear"] for x in ctas if x["clear"][0]]
    for x in fused:
        d = [(x["clk"][s] - x["clk"][0]) / rate if x["clk"][s] else None for s in range(SLOTS)]
        start = max(x["tim"][s] - d[s] for s in range(SLOTS) if d[s] is not None and x["tim"][s])
        x["at"] = [start + v if v is not None else None for v in d]  # ns, absolute
    t0 = min([c[0] for c in clears] + [x["at"][0] for x in fused])

    def us(v):
        return (v - t0) / 1e3

    lat = fused[0]["lat"]
    end = max(x["at"][6] for x in fused)
    print(f"== {name}: event latency {lat:.1f} us, device span {us(end):.1f} us (first clear entry to last fused "
          f"exit), SM clock {rate:.3f} GHz, {len(fused)} fused CTAs with units")
    if clears:
        print(f"   clear kernel: CTAs enter {us(min(c[0] for c in clears)):.2f}..{us(max(c[0] for c in clears)):.2f}, "
              f"exit by {us(max(c[1] for c in clears)):.2f}")
    print("   mark                              median    min     max   (us from t0, over CTAs that reach it)")

    def row(label, vals):
        if vals:
            print(f"   {label:32s} {med(vals):7.2f} {min(vals):7.2f} {max(vals):7.2f}  (n={len(vals)})")

    for s in (0, 46, 36, 37, 23, 45, 38, 39, 1, 7, 15, 2, 4, 3, 47):
        row(NAMES[s], [us(x["at"][s]) for x in fused if x["at"][s] is not None])
    for k in range(3):
        for o, lab in enumerate(SEG):
            row(f"seg {k}: {lab}", [us(x["at"][8 + 8 * k + o]) for x in fused if x["at"][8 + 8 * k + o] is not None])
    for s in (5, 6):
        row(NAMES[s], [us(x["at"][s]) for x in fused])

    print("   phase (within a CTA, clock64)      median    max   us")

    def dur(label, a, b, who=fused):
        v = [(x["at"][b] - x["at"][a]) / 1e3 for x in who if x["at"][a] is not None and x["at"][b] is not None]
        if v:
            print(f"   {label:32s} {med(v):7.2f} {max(v):7.2f}  (n={len(v)})")

    for label, a, b in PHASES:
        dur(label, a, b)
    # The CTA's last selection, by phase.
    sel = [x for x in fused if x["at"][44] is not None]
    if sel:
        starts = []
        for x in sel:
            cands = [x["at"][8 + 8 * k + 5] for k in range(3) if x["at"][8 + 8 * k + 5] is not None]
            starts.append(max(c for c in cands if c <= x["at"][44]) if cands else None)
        for x, st in zip(sel, starts):
            x["sel0"] = st
        print(f"   the CTA's last selection ({len(sel)} CTAs):")
        # Per CTA, the marks of this selection (between its start and its end: a mark an earlier selection left is
        # older), each timed from the one before it.
        steps = defaultdict(list)
        for x in sel:
            if x["sel0"] is None:
                continue
            prev, prev_label = x["sel0"], "start"
            for s in (40, 32, 33, 34, 35, 41, 42, 43, 44):
                at = x["at"][s]
                if at is None or not prev <= at <= x["at"][44]:
                    continue
                steps[(prev_label, SEL[s])].append((at - prev) / 1e3)
                prev, prev_label = at, SEL[s]
        for (a, b), v in steps.items():
            print(f"     {a + ' -> ' + b:52s} {med(v):7.2f} {max(v):7.2f}  (n={len(v)})")
    # The last CTA to finish: its chain.
    last = max(fused, key=lambda x: x["at"][5])
    print(f"   last CTA to finish: c={last['c']} units={last['info'][4]} b={last['info'][5]}..{last['info'][6]}")
    marks = sorted((v, s) for s, v in enumerate(last["at"]) if v is not None)
    for v, s in marks:
        lab = NAMES.get(s) or SEL.get(s) or (f"seg {(s - 8) // 8}: {SEG[(s - 8) % 8]}" if 8 <= s < 32 and (s - 8) % 8 < 7 else f"slot {s}")
        print(f"     {us(v):7.2f}  {lab}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    for name, ctas in load(sys.argv[1]).items():
        report(name, ctas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
