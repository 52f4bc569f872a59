#!/usr/bin/env python3
"""The decode top-k inside a CUDA graph, with PyTorch tensors laid out as vLLM's DeepSeek-V3.2 indexer
keeps them, checked against the CPU backend. Needs PyTorch, a CUDA GPU and a library built with CUDA;
otherwise it says why and exits with 77 (the "skipped" code of the tests).

What makes the call capturable (docs/integration.md says more):
  - every buffer is allocated once, for the largest batch, before capture: the graph records addresses;
  - the workspace is sized once with topk_paged_workspace_size(max batch, max pages, pages);
  - outputs and workspace are passed in, so the binding allocates nothing;
  - the call runs on the current (capturing) stream, and a warm-up call runs before capture.
"""

import sys

SKIPPED = 77
MAX_BATCH, MAX_PAGES, NUM_BLOCKS = 32, 48, 2048     # graphs for up to 32 sequences of up to 48 * 64 tokens
HEADS, DIM, BLOCK, TOPK = 64, 128, 64, 2048


def main() -> int:
    try:
        import torch
    except ImportError:
        print("torch_cuda_graph: SKIPPED: PyTorch is not installed")
        return SKIPPED
    if not torch.cuda.is_available():
        print("torch_cuda_graph: SKIPPED: no CUDA GPU is visible to PyTorch")
        return SKIPPED
    import numpy as np
    import dsa_indexer as dsa

    device = torch.cuda.current_device()
    try:
        gpu = dsa.Context([device])
    except dsa.NoDeviceError as e:
        print(f"torch_cuda_graph: SKIPPED: the library has no GPU backend here ({e.message})")
        return SKIPPED
    cuda = torch.device("cuda", device)
    q_dtype = getattr(torch, "float8_e4m3fn", torch.uint8)  # vLLM passes q as float8_e4m3fn

    # Persistent buffers, as an engine keeps them. The indexer K cache: per block, 64 keys of 128 fp8 bytes
    # then 64 fp32 scales; vLLM shapes it [num_blocks, block_size, 132] uint8, which is the same bytes.
    kv_cache = torch.zeros((NUM_BLOCKS, BLOCK, DIM + 4), dtype=torch.uint8, device=cuda)
    q = torch.zeros((MAX_BATCH, HEADS, DIM), dtype=q_dtype, device=cuda)    # [T, H, D], T = B * next_n
    weights = torch.zeros((MAX_BATCH, HEADS), dtype=torch.float32, device=cuda)
    seq_lens = torch.zeros(MAX_BATCH, dtype=torch.int32, device=cuda)
    block_table = torch.zeros((MAX_BATCH, MAX_PAGES), dtype=torch.int32, device=cuda)
    indices = torch.empty((MAX_BATCH, TOPK), dtype=torch.int32, device=cuda)
    scores = torch.empty((MAX_BATCH, TOPK), dtype=torch.float32, device=cuda)
    workspace = torch.empty(gpu.topk_paged_workspace_size(MAX_BATCH, MAX_PAGES, NUM_BLOCKS, topk=TOPK,
                                                          logical_indices=True),
                            dtype=torch.uint8, device=cuda)

    def fill(batch: int, seed: int) -> None:
        """New inputs for `batch` sequences, written into the same buffers (the graph reads them)."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        lens = torch.randint(1, MAX_PAGES * BLOCK + 1, (batch,), generator=g, dtype=torch.int32)
        raw = torch.randn((NUM_BLOCKS, BLOCK, DIM), generator=g)
        scale = raw.abs().amax(dim=-1).clamp_min(1e-4) / 448.0
        codes = (raw / scale[..., None]).to(q_dtype).view(torch.uint8) if q_dtype != torch.uint8 else \
            torch.randint(0, 0x7E, raw.shape, generator=g, dtype=torch.uint8)
        flat = kv_cache.view(NUM_BLOCKS, -1)
        flat[:, : BLOCK * DIM].copy_(codes.view(NUM_BLOCKS, -1))
        flat[:, BLOCK * DIM :].view(torch.float32).copy_(scale)
        pages = torch.randperm(NUM_BLOCKS, generator=g)[: batch * MAX_PAGES].view(batch, MAX_PAGES)
        block_table[:batch].copy_(pages.to(torch.int32))
        seq_lens[:batch].copy_(lens)
        q_values = torch.randn((batch, HEADS, DIM), generator=g).clamp(-2, 2)
        q[:batch].copy_(q_values.to(q_dtype) if q_dtype != torch.uint8 else q_values.abs().mul(8).to(torch.uint8))
        weights[:batch].copy_(torch.randn((batch, HEADS), generator=g) * (HEADS * DIM) ** -0.5)

    def decode(batch: int) -> None:
        # Views of the first `batch` rows keep the buffers' addresses: one graph per batch size, as engines do.
        gpu.topk_paged(q[:batch], kv_cache, weights[:batch], seq_lens[:batch], block_table[:batch],
                       page_size=BLOCK, topk=TOPK, logical_indices=True, sorted=True,
                       indices=indices[:batch], scores=scores[:batch], workspace=workspace)

    graphs = {}
    for batch in (8, MAX_BATCH):
        fill(batch, seed=batch)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            decode(batch)  # warm-up outside capture
        torch.cuda.current_stream().wait_stream(side)
        graphs[batch] = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graphs[batch]):
            decode(batch)
    gpu.synchronize()

    with dsa.Context() as cpu:
        for batch, seed in ((8, 100), (MAX_BATCH, 101), (8, 102)):
            fill(batch, seed)
            graphs[batch].replay()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graphs[batch].replay()
            stop.record()
            torch.cuda.synchronize()
            gpu.synchronize()  # raises DeviceInputError if a block-table entry was out of range
            host = [t[:batch].cpu() for t in (q, weights, seq_lens, block_table)]
            host[0] = host[0].view(torch.uint8)
            expected = cpu.topk_paged(host[0].numpy(), kv_cache.cpu().numpy(), host[1].numpy(), host[2].numpy(),
                                      host[3].numpy(), page_size=BLOCK, topk=TOPK, logical_indices=True,
                                      sorted=True, return_scores=True)[1]
            got = scores[:batch].cpu().numpy()
            # FlashInfer-Bench's rule: the sorted scores of the two selections agree within 1e-2.
            finite = np.isfinite(expected)
            same_padding = np.array_equal(finite, np.isfinite(got))
            close = np.allclose(got[finite], expected[finite], rtol=1e-2, atol=1e-2)
            print(f"batch {batch:2d}: graph replay {start.elapsed_time(stop) * 1e3:8.1f} us, "
                  f"{'matches' if same_padding and close else 'DIFFERS FROM'} the CPU backend")
            if not (same_padding and close):
                return 1
    print("torch_cuda_graph: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
