#!/usr/bin/env python3
"""The DeepSeek-V3.2 lightning-indexer decode step as vLLM runs it, with torch.ops.dsa_indexer.topk_paged_out
in place of fp8_paged_mqa_logits + top-k: eager, under torch.compile(fullgraph=True), and (on a GPU) that
compiled step captured in a CUDA graph and replayed with new inputs. Eager and compiled must match the CPU
backend's selection; the graph replay must equal the compiled step. Needs PyTorch >= 2.4 (else it says why and exits with 77, the tests' "skipped").
On a machine without a GPU (or a library without CUDA) the same step runs on CPU tensors.

vLLM's indexer (vllm/model_executor/models/deepseek_v2.py, Indexer + sparse_attn_indexer), per decode step:
  1. q = wq_b(q_lora) viewed [T, H, D] (RoPE on its first dims, left out here); k = the new tokens' keys [T, D];
  2. q quantised to fp8 e4m3 per (token, head) with scale amax / 448 (per_token_group_quant_fp8, group 128);
  3. weights = weights_proj(x) * q_scale * softmax_scale * H^-0.5, float32 [T, H];
  4. k quantised the same way and written into the paged indexer cache at slot_mapping
     (indexer_k_quant_and_cache): per block, block_size fp8 keys then block_size fp32 scales,
     [num_blocks, block_size, D + 4] uint8;
  5. the top-k of every decode row into topk_indices_buffer[:T], logical positions (-1 padded), which the
     sparse MLA then reads. Here: one call, on the current stream, with nothing allocated.
"""

import sys

SKIPPED = 77
HEADS, DIM, BLOCK, TOPK = 64, 128, 64, 2048
HIDDEN, Q_LORA = 1024, 256
BATCH, NEXT_N, MAX_BLOCKS_PER_SEQ, NUM_BLOCKS = 8, 1, 64, 1024     # sequences up to 64 * 64 = 4096 tokens
FP8_MAX = 448.0


def main() -> int:
    try:
        import torch
    except ImportError:
        print("torch_vllm_indexer_decode: SKIPPED: PyTorch is not installed")
        return SKIPPED
    import dsa_indexer as dsa
    try:
        import dsa_indexer.torch as dsa_torch  # registers torch.ops.dsa_indexer.*
    except ImportError as e:
        print(f"torch_vllm_indexer_decode: SKIPPED: {e}")
        return SKIPPED
    import numpy as np

    device = torch.device("cpu")
    if torch.cuda.is_available():
        try:
            dsa_torch.context(torch.cuda.current_device())
            device = torch.device("cuda", torch.cuda.current_device())
        except dsa.NoDeviceError as e:
            print(f"the library has no GPU backend here ({e.message}): running on CPU tensors")
    else:
        print("no CUDA GPU visible to PyTorch: running on CPU tensors")
    fp8 = torch.float8_e4m3fn
    T = BATCH * NEXT_N

    # The layer's parameters and the engine's persistent buffers (CUDA graphs record their addresses).
    g = torch.Generator().manual_seed(0)
    wq_b = (torch.randn((Q_LORA, HEADS * DIM), generator=g) * Q_LORA ** -0.5).to(device)
    wk = (torch.randn((HIDDEN, DIM), generator=g) * HIDDEN ** -0.5).to(device)
    weights_proj = (torch.randn((HIDDEN, HEADS), generator=g) * HIDDEN ** -0.5).to(device)
    kv_cache = torch.zeros((NUM_BLOCKS, BLOCK, DIM + 4), dtype=torch.uint8, device=device)
    hidden_states = torch.zeros((T, HIDDEN), device=device)
    q_lora = torch.zeros((T, Q_LORA), device=device)
    seq_lens = torch.zeros(BATCH, dtype=torch.int32, device=device)
    block_table = torch.zeros((BATCH, MAX_BLOCKS_PER_SEQ), dtype=torch.int32, device=device)
    slot_mapping = torch.zeros(T, dtype=torch.int64, device=device)
    topk_indices_buffer = torch.full((T, TOPK), -1, dtype=torch.int32, device=device)
    topk_scores = torch.empty((T, TOPK), dtype=torch.float32, device=device)
    softmax_scale = DIM ** -0.5

    def quantize(x):
        """fp8 e4m3 codes and float32 scales of x [..., D], one scale per row of D (amax / 448)."""
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4) / FP8_MAX
        return (x / scale).to(fp8), scale

    def cache_keys(k, slots):
        """indexer_k_quant_and_cache: the new tokens' fp8 keys and scales into their cache slots."""
        codes, scale = quantize(k)
        blocks = kv_cache.view(NUM_BLOCKS, -1)
        blocks[:, : BLOCK * DIM].view(NUM_BLOCKS, BLOCK, DIM)[slots // BLOCK, slots % BLOCK] = codes.view(torch.uint8)
        blocks[:, BLOCK * DIM :].view(torch.float32)[slots // BLOCK, slots % BLOCK] = scale.squeeze(-1)

    def indexer_decode(hidden_states, q_lora, seq_lens, block_table, out_indices, out_scores):
        """Steps 1-3 and 5: what the compiled graph (and the CUDA graph) contains."""
        q = (q_lora @ wq_b).view(T, HEADS, DIM)
        q_fp8, q_scale = quantize(q)                                   # [T, H, D] fp8, [T, H, 1]
        weights = (hidden_states @ weights_proj).unsqueeze(-1) * q_scale * softmax_scale * HEADS ** -0.5
        torch.ops.dsa_indexer.topk_paged_out(
            q_fp8.view(BATCH, NEXT_N, HEADS, DIM), kv_cache, weights.squeeze(-1), seq_lens, block_table,
            out_indices, out_scores, page_size=BLOCK, logical_indices=True, sorted=True)

    def new_step(seed):
        """A decode step's inputs: context already cached, plus this step's token (its key written now)."""
        r = torch.Generator().manual_seed(seed)
        lens = torch.randint(1, MAX_BLOCKS_PER_SEQ * BLOCK + 1, (BATCH,), generator=r, dtype=torch.int32)
        table = torch.randperm(NUM_BLOCKS, generator=r)[: BATCH * MAX_BLOCKS_PER_SEQ].view(BATCH, -1)
        block_table.copy_(table.to(torch.int32))
        seq_lens.copy_(lens)
        context_keys = torch.randn((NUM_BLOCKS * BLOCK, DIM), generator=r).to(device)
        cache_keys(context_keys, torch.arange(NUM_BLOCKS * BLOCK, device=device))
        last = (lens - 1).to(torch.int64)
        slot_mapping.copy_(table.gather(1, (last // BLOCK).view(-1, 1)).view(-1) * BLOCK + last % BLOCK)
        hidden_states.copy_(torch.randn((T, HIDDEN), generator=r))
        q_lora.copy_(torch.randn((T, Q_LORA), generator=r))
        cache_keys(hidden_states @ wk, slot_mapping)                  # step 4, eager (vLLM: its own op)

    def run(step):
        topk_indices_buffer.fill_(-7)
        step(hidden_states, q_lora, seq_lens, block_table, topk_indices_buffer, topk_scores)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return topk_indices_buffer.clone(), topk_scores.clone()

    compiled = torch.compile(indexer_decode, fullgraph=True, backend="inductor" if device.type == "cuda" else "aot_eager")
    graph = None
    with torch.inference_mode(), dsa.Context() as cpu:
        for seed in (1, 2, 3):
            new_step(seed)
            eager = run(indexer_decode)
            traced = run(compiled)
            if device.type == "cuda":
                if graph is None:  # capture once (after the compiled step's warm-up), replay every step
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        compiled(hidden_states, q_lora, seq_lens, block_table, topk_indices_buffer, topk_scores)
                replayed = run(lambda *args: graph.replay())
            else:
                replayed = traced
            # The CPU backend on the eager step's fp8 inputs is the reference. Compiled code may round the
            # quantisation differently from eager (fused kernels), so every variant is held to
            # FlashInfer-Bench's rule: the same padding, sorted scores within 1e-2. The CUDA graph replays
            # the compiled kernels: it must equal the compiled step exactly.
            q_fp8, q_scale = quantize((q_lora @ wq_b).view(T, HEADS, DIM))
            weights = ((hidden_states @ weights_proj).unsqueeze(-1) * q_scale * softmax_scale * HEADS ** -0.5)
            host = [t.cpu().contiguous() for t in (q_fp8.view(torch.uint8), kv_cache, weights.squeeze(-1),
                                                   seq_lens, block_table)]
            _, expected = cpu.topk_paged(*[t.numpy() for t in host], page_size=BLOCK, topk=TOPK,
                                         logical_indices=True, sorted=True, return_scores=True)
            finite = np.isfinite(expected)

            def close(result):
                got = result[1].cpu().numpy()
                return np.array_equal(finite, np.isfinite(got)) and \
                    np.allclose(got[finite], expected[finite], rtol=1e-2, atol=1e-2) and \
                    torch.equal(result[0] >= 0, torch.from_numpy(finite).to(result[0].device))

            same = all(torch.equal(a, b) for a, b in zip(traced, replayed))
            ok = close(eager) and close(traced) and same
            print(f"step {seed}: {int((eager[0] >= 0).sum())} positions selected over {BATCH} sequences on "
                  f"{device}; eager {'matches' if close(eager) else 'DIFFERS FROM'} and compiled "
                  f"{'matches' if close(traced) else 'DIFFERS FROM'} the CPU backend"
                  + (f"; the CUDA graph replay {'equals' if same else 'DIFFERS FROM'} the compiled step"
                     if graph is not None else ""))
            if not ok:
                return 1
    if device.type == "cuda":
        dsa_torch.context(device).synchronize()  # raises DeviceInputError on a bad block-table entry
    print("torch_vllm_indexer_decode: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
