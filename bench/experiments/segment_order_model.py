#!/usr/bin/env python3
"""A fluid model of one decode call of a batch with more sequences than CTAs (default 256 x 8192 tokens on 132
CTAs, the even plan of kernels/decode_plan.h), for the order in which a CTA scores its segments.

Each CTA streams its 64-token units; the CTAs that are streaming share the DRAM bandwidth equally, each at most
`rmax` times the average share. After a segment, a CTA pays a setup; after a part of a split sequence, a ticket;
and the last part of a sequence to arrive selects its rows. While its consumers select, its producer keeps loading
up to `ring` units ahead. Orders: split_first (main before session 51: both shared sequences first, then the whole
ones), unit (the units in order) and scoring (decode-scoring-order.patch, kernels/decode_plan.h's rule: unit order,
but a last part shorter than --short-part units goes second, as in split_first). Figures in us; the defaults are
session 49's H100 measurements (bench/NOTES.md).
"""
import argparse


def plan(B, units_per_seq, G):
    U = B * units_per_seq
    ctas = []
    for c in range(G):
        u0, u1 = c * U // G, (c + 1) * U // G
        segs, b = [], u0 // units_per_seq
        while b * units_per_seq < u1:
            segs.append((b, max(u0, b * units_per_seq), min(u1, (b + 1) * units_per_seq)))
            b += 1
        ctas.append(segs)
    return ctas


def split_first(segs):
    return [segs[0], segs[-1]] + segs[1:-1] if len(segs) > 2 else segs


def scoring(segs, short_part):
    return split_first(segs) if len(segs) > 2 and segs[-1][2] - segs[-1][1] < short_part else segs


def simulate(ctas, bw, rmax_factor, sel, ticket, setup, ring, dt=0.01):
    G = len(ctas)
    rmax = bw / G * rmax_factor
    parts = {}
    for c, segs in enumerate(ctas):
        for b, _, _ in segs:
            parts.setdefault(b, set()).add(c)
    arrived = {b: 0 for b in parts}
    st = [dict(k=0, used=0.0, buf=0.0, stall=0.0, fin=None) for _ in range(G)]
    t = 0.0
    while any(s['fin'] is None for s in st):
        active = []
        for c, s in enumerate(st):
            if s['fin'] is not None:
                continue
            left = sum(hi - lo for _, lo, hi in ctas[c][s['k']:]) - s['used'] - s['buf']
            if left > 1e-9 and not (s['stall'] > 0 and s['buf'] >= ring):
                active.append(c)
        rate = min(rmax, bw / len(active)) if active else 0.0
        for c in active:
            st[c]['buf'] += rate * dt
        for c, s in enumerate(st):
            if s['fin'] is not None:
                continue
            if s['stall'] > 0:
                s['stall'] -= dt
                if s['stall'] <= 0 and s['k'] >= len(ctas[c]):
                    s['fin'] = t
                continue
            b, lo, hi = ctas[c][s['k']]
            take = min(hi - lo - s['used'], s['buf'])
            s['used'] += take
            s['buf'] -= take
            if s['used'] >= hi - lo - 1e-9:
                s['k'] += 1
                s['used'] = 0.0
                arrived[b] += 1
                split = len(parts[b]) > 1
                s['stall'] = setup + (ticket if split else 0.0) + (sel if arrived[b] == len(parts[b]) else 0.0)
        t += dt
    return max(s['fin'] for s in st)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--tokens', type=int, default=8192)
    ap.add_argument('--ctas', type=int, default=132)
    ap.add_argument('--gbps', type=float, default=3000 * 0.93, help='stream bandwidth, GB/s')
    ap.add_argument('--selection', type=float, default=6.1)
    ap.add_argument('--ticket', type=float, default=1.0)
    ap.add_argument('--setup', type=float, default=1.0)
    ap.add_argument('--ring', type=float, default=8, help='units a producer loads ahead')
    ap.add_argument('--short-part', type=int, default=16, help="scoring order's kShortLastPartUnits")
    args = ap.parse_args()
    unit_bytes = 64 * 132
    bw = args.gbps * 1e3 / unit_bytes  # units per us
    base = plan(args.batch, (args.tokens + 63) // 64, args.ctas)
    for rmax in (1.5, 2.0, 3.0):
        run = lambda ctas: simulate(ctas, bw, rmax, args.selection, args.ticket, args.setup, args.ring)
        a = run([split_first(s) for s in base])
        b = run(base)
        c = run([scoring(s, args.short_part) for s in base])
        print(f'per-SM cap {rmax}x the average share: split_first {a:.1f} us, unit order {b:.1f} ({b - a:+.1f}), '
              f'scoring order {c:.1f} ({c - a:+.1f})')


if __name__ == '__main__':
    main()
