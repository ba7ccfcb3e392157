#!/usr/bin/python3
"""PyTorch side of bench/train_throughput: the mor-dist model (docs/MODEL.md), written for speed.

    /usr/bin/python3 bench/torch_train.py train --config configs/smollm135m_vanilla.ini \
        --seq-len 512 --batch 1 --warmup 2 --steps 4 --data 'DIR/edu_fineweb_train_*.bin' \
        [--threads 2] [--metrics FILE] [--bf16]
    /usr/bin/python3 bench/torch_train.py sgemm [--n 2048] [--reps 20] [--threads 2]
    /usr/bin/python3 bench/torch_train.py bf16gemm [--n 2048] [--reps 20] [--threads 2]
    /usr/bin/python3 bench/torch_train.py blasinfo [--threads 2]

`train` builds the model from the same INI file mor-dist reads (shapes only: [model] and [mor]),
runs warm-up + timed optimizer steps (forward, backward, clip 1.0, AdamW) on windows of the same
llm.c token shard and writes one JSON line per step ({"step", "loss", "step_time_s",
"tokens_per_s", "gflops", "warmup"}); GFLOP/s uses mor-dist's own FLOP count (model.cpp: 3x the
forward GEMM + attention FLOPs). `train --bf16` runs the forward and the loss under
torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's standard CPU mixed precision: the GEMMs in
bf16 through oneDNN, fp32 master weights, fp32 AdamW; backward outside the autocast region, as
usual); without --bf16 it is plain fp32. `sgemm` times torch.matmul (fp32 [n,n]@[n,n], output
reused) and numpy's sgemm and prints JSON with the best and median GFLOP/s. `bf16gemm` does the same
for torch.matmul on bf16 [n,n] tensors (oneDNN's bf16 GEMM, fp32 accumulation; AVX512-BF16 / AMX
where the CPU has them). `blasinfo` prints which BLAS library this process loaded and which
OpenBLAS core (kernel set) it chose.

Implementation notes (the fastest eager fp32 code we know for torch 1.13 on CPU, no fused QKV):
plain nn.Linear(bias=False) projections on [B, n, D]; GQA without copying K/V (the H/Hkv query heads
of one kv head are stacked into one [rep*n, hd] GEMM operand); the causal mask and 1/sqrt(hd) fused
into one torch.baddbmm; RoPE from a precomputed cos/sin table indexed by absolute positions;
expert-choice with torch.topk + sort + gather / scatter_add on [B, T, D]; the tied LM head as
F.linear + F.cross_entropy; torch.optim.AdamW (decay on matrices, none on norm weights, like
mor-dist), clip_grad_norm_(1.0), zero_grad(set_to_none=True). Run it with torch.set_num_threads(N)
and the environment perf-facts.md lists (the launching script sets it).
"""
import argparse
import configparser
import ctypes
import glob
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- environment

def blas_info():
    """Which BLAS/OpenMP libraries this process has mapped, and OpenBLAS's config/core."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1] if len(line.split()) >= 6 else ""
            base = os.path.basename(p)
            if any(s in base for s in ("blas", "lapack", "gomp", "iomp", "mkl")):
                libs.add(os.path.realpath(p))
    info = {"mapped": sorted(libs)}
    try:
        ob = ctypes.CDLL("libopenblas.so.0")  # the already-loaded one (same soname)
        ob.openblas_get_config.restype = ctypes.c_char_p
        ob.openblas_get_corename.restype = ctypes.c_char_p
        info["openblas_config"] = ob.openblas_get_config().decode()
        info["openblas_core"] = ob.openblas_get_corename().decode()
        info["openblas_parallel"] = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(
            ob.openblas_get_parallel(), "?")
        info["openblas_threads"] = ob.openblas_get_num_threads()
    except (OSError, AttributeError) as e:
        info["openblas_error"] = str(e)
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    cap = [l.strip() for l in torch.__config__.show().splitlines() if "CPU capability" in l]
    info["aten_cpu_capability"] = cap[0].split(":")[-1].strip() if cap else "?"
    return info


# ----------------------------------------------------------------------------- config

def load_config(path, seq_len):
    ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    with open(path) as f:
        ini.read_string(f.read())
    m, r = ini["model"], ini["mor"] if ini.has_section("mor") else {}
    c = argparse.Namespace(
        V=int(m.get("vocab_size", 50304)), D=int(m.get("d_model", 576)), H=int(m.get("n_heads", 9)),
        Hkv=int(m.get("n_kv_heads", 3)), F=int(m.get("d_ff", 1536)), L=int(m.get("n_layers", 30)),
        T=seq_len or int(m.get("seq_len", 2048)), eps=float(m.get("rms_eps", 1e-5)),
        theta=float(m.get("rope_theta", 10000)), std=float(m.get("init_std", 0.02)),
        sharing=r.get("sharing", "middle_cycle"), Nr=int(r.get("n_recursions", 1)),
        router=r.get("router", "none"), kv_mode=r.get("kv_mode", "recursion"),
        capacity=r.get("capacity", ""), ec_alpha=float(r.get("ec_alpha", 0.1)),
        aux_coeff=float(r.get("aux_coeff", 0.001)))
    if c.Nr > 1 and (c.sharing != "middle_cycle" or c.router != "expert" or c.kv_mode != "recursion"):
        sys.exit("torch_train.py: only vanilla (N_r = 1) and middle_cycle + expert + kv recursion are "
                 "implemented here")
    c.hd = c.D // c.H
    caps = [float(x) for x in c.capacity.replace(",", " ").split()] if c.capacity.strip() else \
        [(c.Nr - i) / c.Nr for i in range(c.Nr)]
    c.k = [max(1, math.floor(x * c.T + 1e-6)) for x in caps]
    c.block = (c.L - 2) // c.Nr if c.Nr > 1 else 0
    return c


# ----------------------------------------------------------------------------- model

def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    """x [B, heads, n, hd]; cos/sin [B or 1, 1, n, hd/2] (rotate_half, non-interleaved)."""
    x1, x2 = x.chunk(2, -1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, F_, hd = c.D, c.F, c.hd
        self.c = c
        self.input_layernorm = nn.Parameter(torch.ones(D))
        self.q_proj = nn.Linear(D, c.H * hd, bias=False)
        self.k_proj = nn.Linear(D, c.Hkv * hd, bias=False)
        self.v_proj = nn.Linear(D, c.Hkv * hd, bias=False)
        self.o_proj = nn.Linear(c.H * hd, D, bias=False)
        self.post_attention_layernorm = nn.Parameter(torch.ones(D))
        self.gate_proj = nn.Linear(D, F_, bias=False)
        self.up_proj = nn.Linear(D, F_, bias=False)
        self.down_proj = nn.Linear(F_, D, bias=False)

    def forward(self, x, cos, sin, mask):
        """x [B, n, D] (rows in ascending position order); mask [rep*n, n] additive causal."""
        c = self.c
        B, n, D = x.shape
        H, Hkv, hd = c.H, c.Hkv, c.hd
        rep = H // Hkv
        a = rmsnorm(x, self.input_layernorm, c.eps)
        q = rope(self.q_proj(a).view(B, n, H, hd).transpose(1, 2), cos, sin)      # [B, H, n, hd]
        k = rope(self.k_proj(a).view(B, n, Hkv, hd).transpose(1, 2), cos, sin)    # [B, Hkv, n, hd]
        v = self.v_proj(a).view(B, n, Hkv, hd).transpose(1, 2)
        # query head h uses kv head h // rep: stack the rep query heads of a kv head (no K/V copies)
        q = q.reshape(B * Hkv, rep * n, hd)
        att = torch.baddbmm(mask, q, k.reshape(B * Hkv, n, hd).transpose(1, 2), alpha=1.0 / math.sqrt(hd))
        p = torch.softmax(att, -1)
        o = torch.bmm(p, v.reshape(B * Hkv, n, hd))                                # [B*Hkv, rep*n, hd]
        o = o.view(B, H, n, hd).transpose(1, 2).reshape(B, n, H * hd)
        h = x + self.o_proj(o)
        m = rmsnorm(h, self.post_attention_layernorm, c.eps)
        return h + self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Parameter(torch.empty(c.V, c.D))
        if c.Nr == 1:
            self.layers = nn.ModuleList(Layer(c) for _ in range(c.L))
        else:
            self.prelude, self.coda = Layer(c), Layer(c)
            self.shared = nn.ModuleList(Layer(c) for _ in range(c.block))
            self.routers = nn.ModuleList(nn.Linear(c.D, 1, bias=False) for _ in range(c.Nr))
        self.norm = nn.Parameter(torch.ones(c.D))
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, c.std)
        half = c.hd // 2
        inv = c.theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / c.hd)
        ang = torch.arange(c.T, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos_t, self.sin_t = torch.cos(ang).float(), torch.sin(ang).float()   # [T, hd/2]
        rep = c.H // c.Hkv
        self.masks = {}
        for n in sorted({c.T, *c.k}):
            m = torch.full((n, n), float("-inf")).triu_(1)
            self.masks[n] = m.repeat(rep, 1).contiguous()                         # [rep*n, n]

    def forward(self, inp, tgt):
        c = self.c
        B, T = inp.shape
        h = F.embedding(inp, self.embed)                                          # [B, T, D]
        cos, sin = self.cos_t[None, None], self.sin_t[None, None]
        mask = self.masks[T]
        aux = h.new_zeros(())
        if c.Nr == 1:
            for layer in self.layers:
                h = layer(h, cos, sin, mask)
        else:
            h = self.prelude(h, cos, sin, mask)
            S = None                                                              # candidates: all
            for r in range(c.Nr):
                hc = h if S is None else h.gather(1, S[..., None].expand(-1, -1, c.D))
                s = self.routers[r](hc).squeeze(-1)                               # [B, n] logits
                g = c.ec_alpha * torch.sigmoid(s)
                top = torch.topk(g.detach(), c.k[r], dim=1, sorted=False).indices
                idx = torch.sort(top, dim=1).values                               # into C, ascending
                y01 = torch.zeros_like(s).scatter_(1, idx, 1.0)
                aux = aux + F.binary_cross_entropy_with_logits(s, y01, reduction="sum") / (B * s.shape[1])
                Sr = idx if S is None else S.gather(1, idx)                       # absolute positions
                Se = Sr[..., None].expand(-1, -1, c.D)
                x = hc.gather(1, idx[..., None].expand(-1, -1, c.D))
                cr, sr = self.cos_t[Sr][:, None], self.sin_t[Sr][:, None]         # [B, 1, k, hd/2]
                mk = self.masks[c.k[r]]
                for layer in self.shared:
                    x = layer(x, cr, sr, mk)
                h = h.scatter_add(1, Se, g.gather(1, idx)[..., None] * x)         # H[S_r] += g * Block
                S = Sr
            h = self.coda(h, cos, sin, mask)
        logits = F.linear(rmsnorm(h, self.norm, c.eps), self.embed)              # tied head [B, T, V]
        ce = F.cross_entropy(logits.view(B * T, c.V), tgt.reshape(B * T))
        return ce + c.aux_coeff * aux, ce


def fwd_flops(c, B):
    """mor-dist's count (model/model.cpp): 2 per weight per token + 4*H*hd per causal pair, + LM head."""
    D, F_, Hd, KVd = c.D, c.F, c.H * c.hd, c.Hkv * c.hd
    w = D * Hd * 2 + 3 * D * F_ + 2 * D * KVd
    per = lambda n: 2 * w * n + 4 * Hd * n * (n + 1) / 2                       # noqa: E731
    if c.Nr == 1:
        f = c.L * per(c.T)
    else:
        f = 2 * per(c.T) + sum(c.block * per(k) for k in c.k)
    return B * (f + 2 * c.T * D * c.V)


# ----------------------------------------------------------------------------- data

def open_shard(pattern):
    files = sorted(glob.glob(pattern))
    if not files:
        sys.exit(f"torch_train.py: no shard matches {pattern!r}")
    hdr = np.fromfile(files[0], dtype=np.int32, count=256)
    dt = {20240520: np.uint16, 20240801: np.uint32}.get(int(hdr[0]))
    if dt is None:
        sys.exit(f"torch_train.py: {files[0]}: not an llm.c token shard")
    return np.memmap(files[0], dtype=dt, mode="r", offset=1024, shape=(int(hdr[2]),))


# ----------------------------------------------------------------------------- commands

def cmd_train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    c = load_config(a.config, a.seq_len)
    model = Model(c)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    toks = open_shard(a.data)
    nwin = (len(toks) - 1) // (c.T + 1)
    rng = np.random.default_rng(a.seed)
    flops = 3 * fwd_flops(c, a.batch)                                             # backward ~ 2x forward
    layout = (f"{c.L} layers" if c.Nr == 1 else
              f"1 + {c.block}x{c.Nr} + 1 layers, expert-choice k_r = {c.k}, gate {c.ec_alpha}*sigmoid, "
              f"BCE aux {c.aux_coeff}")
    print(f"torch: V={c.V} D={c.D} heads={c.H}/{c.Hkv} ff={c.F} T={c.T} | {layout}")
    print(f"torch: params {n_params} | batch {a.batch} x {c.T} = {a.batch * c.T} tokens/step | "
          f"threads {torch.get_num_threads()} | {flops / 1e9:.1f} GFLOP/step (mor-dist's count)")
    if a.bf16:
        print("torch: precision bf16 autocast (forward + loss under torch.autocast(\"cpu\", torch.bfloat16); "
              "fp32 master weights and AdamW)")
    sys.stdout.flush()
    out = open(a.metrics, "a") if a.metrics else None
    params = list(model.parameters())
    for step in range(a.warmup + a.steps):
        w = rng.integers(0, nwin, size=a.batch)
        batch = torch.from_numpy(np.stack([np.asarray(toks[i * (c.T + 1):(i + 1) * (c.T + 1)], dtype=np.int64)
                                           for i in w]))
        t0 = time.perf_counter()
        if a.bf16:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                loss, ce = model(batch[:, :-1], batch[:, 1:])
        else:
            loss, ce = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        rec = dict(step=step + 1, warmup=step < a.warmup, loss=float(loss), ce=float(ce), grad_norm=float(gnorm),
                   step_time_s=dt, tokens_per_s=a.batch * c.T / dt, gflops=flops / dt / 1e9, params=n_params,
                   tokens_per_step=a.batch * c.T)
        if a.bf16:
            rec["precision"] = "bf16"
        print(f"torch step {step + 1:3d}{' (warm-up)' if rec['warmup'] else '          '} | loss {rec['loss']:.6f} "
              f"| gnorm {rec['grad_norm']:.4f} | {dt:.3f} s | {rec['tokens_per_s']:.1f} tok/s "
              f"| {rec['gflops']:.1f} GFLOP/s")
        sys.stdout.flush()
        if out:
            out.write(json.dumps(rec) + "\n")
            out.flush()


def gemm_rates(a, matmul):
    """(best, median) GFLOP/s of a.reps runs of matmul() ([a.n]^3) after 3 warm-up runs."""
    fl = 2.0 * a.n ** 3
    out = []
    for i in range(a.reps + 3):
        t = time.perf_counter()
        matmul()
        dt = time.perf_counter() - t
        if i >= 3:
            out.append(fl / dt / 1e9)
    return max(out), statistics.median(out)


def cmd_sgemm(a):
    torch.set_num_threads(a.threads)
    n = a.n
    res = {"n": n, "threads": torch.get_num_threads()}
    rates = lambda matmul: gemm_rates(a, matmul)  # noqa: E731

    x, y = torch.randn(n, n), torch.randn(n, n)
    z = torch.empty(n, n)
    res["torch_best"], res["torch_median"] = rates(lambda: torch.matmul(x, y, out=z))
    xn, yn, zn = x.numpy(), y.numpy(), np.empty((n, n), np.float32)
    res["numpy_best"], res["numpy_median"] = rates(lambda: np.matmul(xn, yn, out=zn))
    res["blas"] = blas_info()
    print(json.dumps(res))


def cmd_bf16gemm(a):
    torch.set_num_threads(a.threads)
    n = a.n
    res = {"n": n, "threads": torch.get_num_threads(), "dtype": "bf16"}
    x, y = torch.randn(n, n).bfloat16(), torch.randn(n, n).bfloat16()
    z = torch.empty(n, n, dtype=torch.bfloat16)
    res["torch_best"], res["torch_median"] = gemm_rates(a, lambda: torch.matmul(x, y, out=z))
    cfg = torch.__config__.show()
    dnnl = [l.strip(" -") for l in cfg.splitlines() if "DNN" in l]
    res["onednn"] = dnnl[0] if dnnl else "?"
    res["mkldnn_enabled"] = bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
    print(json.dumps(res))


def cmd_blasinfo(a):
    torch.set_num_threads(a.threads)
    torch.matmul(torch.ones(64, 64), torch.ones(64, 64))  # make sure the BLAS is initialised
    print(json.dumps(blas_info()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config", required=True)
    t.add_argument("--seq-len", type=int, default=512)
    t.add_argument("--batch", type=int, default=1)
    t.add_argument("--warmup", type=int, default=2)
    t.add_argument("--steps", type=int, default=4)
    t.add_argument("--data", required=True, help="glob of llm.c .bin shards (the first is used)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--wd", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--metrics", default="")
    t.add_argument("--bf16", action="store_true",
                   help="forward + loss under torch.autocast(\"cpu\", torch.bfloat16) (fp32 masters and AdamW)")
    s = sub.add_parser("sgemm")
    s.add_argument("--n", type=int, default=2048)
    s.add_argument("--reps", type=int, default=20)
    s.add_argument("--threads", type=int, default=2)
    g = sub.add_parser("bf16gemm")
    g.add_argument("--n", type=int, default=2048)
    g.add_argument("--reps", type=int, default=20)
    g.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("blasinfo")
    b.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    {"train": cmd_train, "sgemm": cmd_sgemm, "bf16gemm": cmd_bf16gemm, "blasinfo": cmd_blasinfo}[a.cmd](a)


if __name__ == "__main__":
    main()
