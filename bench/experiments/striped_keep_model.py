#!/usr/bin/env python3
"""A model of select_microbench.cu's keep_striped: the slot it gives each kept item, from the warps' ballots and
the scan of the warps' totals, against the best k of the row by (key descending, position ascending), output in
position order. Random rows of 2-4 warps x 4-16 items, padding (key 0) past n, any k < n, key spaces from 3 values
(ties everywhere) to 2^31. Run: python3 bench/experiments/striped_keep_model.py (prints "ok", or fails an assert).
"""
import random
def popc(x): return bin(x).count('1')
def model(threads, items, n, k, keyspace, seed):
    rnd=random.Random(seed)
    warps=threads//32
    N=threads*items
    # key by position, padding 0 past n
    keys=[rnd.randrange(1,keyspace) if p<n else 0 for p in range(N)]
    # expected: best k by (key desc, pos asc), output in position order
    order=sorted(range(n), key=lambda p:(-keys[p],p))[:k]
    expect=sorted(order)
    # threshold as refine would leave it with shift 0: prefix = key of k-th, need = k - count above
    kth=keys[order[-1]]
    above_cnt=sum(1 for p in range(N) if keys[p]>kth)
    need=k-above_cnt
    lowest=kth; span=0; highest=kth
    pos=lambda w,l,e: w*32*items+(e//4)*128+l*4+e%4
    gt=[[0]*items for _ in range(warps)]; eq=[[0]*items for _ in range(warps)]
    wt=[]
    for w in range(warps):
        g=e_=0
        for e in range(items):
            for l in range(32):
                kk=keys[pos(w,l,e)]
                a=kk>highest; q=(not a) and (kk-lowest)&0xffffffff<=span
                if a: gt[w][e]|=1<<l
                if q: eq[w][e]|=1<<l
            g+=popc(gt[w][e]); e_+=popc(eq[w][e])
        wt.append((g,e_))
    out={}
    for w in range(warps):
        for l in range(32):
            bl=(1<<l)-1
            gb=sum(x[0] for x in wt[:w]); eb=sum(x[1] for x in wt[:w])
            for q in range(items//4):
                ga=gb; ea=eb
                for c in range(4):
                    ga+=popc(gt[w][4*q+c]&bl); ea+=popc(eq[w][4*q+c]&bl)
                    gb+=popc(gt[w][4*q+c]); eb+=popc(eq[w][4*q+c])
                for c in range(4):
                    e=4*q+c
                    a=(gt[w][e]>>l)&1; q_=(eq[w][e]>>l)&1
                    if a or (q_ and ea<need):
                        slot=ga+min(ea,need)
                        assert slot not in out, (slot)
                        out[slot]=pos(w,l,e)
                    ga+=a; ea+=q_
    got=[out[i] for i in range(k)]
    assert sorted(out)==list(range(k)), (len(out))
    assert got==expect, (seed,)
for seed in range(300):
    r=random.Random(seed)
    threads=r.choice([64,128]); items=r.choice([4,8,16])
    N=threads*items; n=r.randrange(2,N+1); k=r.randrange(1,n)
    model(threads,items,n,k,r.choice([3,10,1000,2**31]),seed)
print('ok')
