#!/usr/bin/env python3
"""A model of GroupSelect::keep_in_order_striped (decode-striped-register-selection.patch): GroupSelect::refine over
every item (padding included), then the striped keep exactly as the patch computes it (per-thread packed counts, an
exclusive scan in thread order read at each warp's lane 0, per group of four the lanes-before counts from ballots),
against the best k of the row by (key descending, position ascending), returned in position order. Groups of
512 x 16, 256 x 32 and smaller; n at warp and group edges; k from 1 to n - 1; keys all tied, sharing their top bits
(deep refinement), NaN's key 0 among real items, or spread. Run: python3 bench/experiments/striped_keep_model.py
[cases] (prints "ok N", or fails an assert; 100 cases take ~8 s).
"""
import random, sys
M=0xffffffff
def popc(x): return bin(x).count('1')
def refine(keys, k, N):
    # GroupSelect::refine over all N items (padding included), find_bin semantics: bin holding need-th largest
    prefix=0; shift=32; need=k; above=0; ties=N
    while ties>need and shift>0:
        width=min(shift,11); bshift=shift-width
        lowest=(prefix<<shift)&M; span=(1<<shift)-1
        hist=[0]*(1<<width)
        for x in keys:
            low=(x-lowest)&M
            if low<=span: hist[low>>bshift]+=1
        acc=0
        for b in range(len(hist)-1,-1,-1):
            if acc+hist[b]>=need: bin_=b; up=acc; ties=hist[b]; break
            acc+=hist[b]
        above+=up; need-=up
        prefix=(prefix<<width)|bin_; shift=bshift
    return prefix, shift, need
def striped(threads, items, n, k, keys):
    N=threads*items
    prefix,shift,need=refine(keys,k,N)
    lowest=(prefix<<shift)&M if shift<32 else 0
    span=(1<<shift)-1; highest=(lowest+span)&M
    assert lowest+span<=M
    pos=lambda ct,e: (ct//32)*32*items+(ct%32)*4+(e//4)*128+e%4
    assert sorted(pos(t,e) for t in range(threads) for e in range(items))==list(range(N))
    isgt=lambda x: x>highest
    iseq=lambda x: x<=highest and ((x-lowest)&M)<=span
    # pass 1: per-thread packed counts, exclusive scan in thread order
    packed=[]
    for t in range(threads):
        g=sum(isgt(keys[pos(t,e)]) for e in range(items)); q=sum(iseq(keys[pos(t,e)]) for e in range(items))
        v=g|(q<<16); assert v < 2**31; packed.append(v)
    excl=[0]*threads; run=0
    for t in range(threads): excl[t]=run; run+=packed[t]
    assert run < 2**31 and (run&0xffff)==sum(p&0xffff for p in packed)
    out={}
    for t in range(threads):
        w=t//32; lane=t%32; bl=(1<<lane)-1
        before=excl[w*32]  # shfl from lane 0
        gg=before&0xffff; eg=before>>16
        for q in range(items//4):
            ga=gg; ea=eg
            for c in range(4):
                e=4*q+c
                above=sum(1<<l for l in range(32) if isgt(keys[pos(w*32+l,e)]))
                equal=sum(1<<l for l in range(32) if iseq(keys[pos(w*32+l,e)]))
                ga+=popc(above&bl); ea+=popc(equal&bl); gg+=popc(above); eg+=popc(equal)
            for c in range(4):
                x=keys[pos(t,4*q+c)]; a=isgt(x); qq=(not a) and ((x-lowest)&M)<=span
                if a or (qq and ea<need):
                    s=ga+min(ea,need); assert s not in out; out[s]=pos(t,4*q+c)
                ga+=a; ea+=qq
    return out
def check(threads, items, n, k, keys):
    out=striped(threads,items,n,k,keys)
    best=sorted(range(n), key=lambda p:(-keys[p],p))[:k]
    assert sorted(out)==list(range(k)), (len(out),k)
    assert [out[i] for i in range(k)]==sorted(best)
cnt=0
rnd=random.Random(1)
configs=[(512,16),(256,32),(64,8),(128,4)]
special_n=lambda N:[x for x in [1,2,3,4,5,127,128,129,511,512,513,1023,1024,1025,N-1,N] if x<=N]
for it in range(int(sys.argv[1]) if len(sys.argv)>1 else 200):
    threads,items=rnd.choice(configs); N=threads*items
    n=rnd.choice(special_n(N)+[rnd.randrange(2,N+1)]*4)
    if n<2: n=2
    k=rnd.choice([1,2,n-1,rnd.randrange(1,n),min(n-1,2048)])
    ks=rnd.choice(['small','mid','full','hi','nan'])
    def gen():
        if ks=='small': return rnd.randrange(1,4)
        if ks=='mid': return rnd.randrange(1,1000)
        if ks=='full': return rnd.randrange(1,2**32)
        if ks=='hi': return (rnd.randrange(0,4)<<21)|rnd.randrange(0,4)  # share top bits: deep refine, ties
        return rnd.choice([0,0,1,2**32-1,5])  # real NaN keys (0), extremes
    keys=[gen() if p<n else 0 for p in range(N)]
    check(threads,items,n,k,keys); cnt+=1
print('ok',cnt)
