#!/usr/bin/python3
"""PyTorch reference of the mor-dist model, exactly as written in docs/MODEL.md.

What it is: a small, plain implementation (one sequence at a time, attention as
scores -> mask -> softmax -> weighted sum, gradients by autograd) of every variant
in MODEL.md: sharing cycle | sequence | middle_cycle | middle_sequence, N_r >= 1,
router none | expert | token, kv_mode recursion | share, and all loss terms.

How the C++ parity tests use it: the test writes an INI config and a `.mort` file
holding every parameter under its MODEL.md name plus `tokens` (int32 [B, T+1]),
runs

    /usr/bin/python3 tests/reference/mor_ref.py --config C.ini --params P.mort \
        --out O.mort [--dtype float64|float32]            (default float64)

and compares O.mort with what the C++ engine computes from the same inputs.
O.mort holds, in this order:
    loss                      [1]  total = CE + weighted router terms
    loss.ce, loss.aux, loss.ec_z, loss.bal, loss.z   [1] each, unweighted, 0 if n/a
    selected.{r}  int32 [B, k_r]  (router = expert) sorted absolute positions of S_r
    depth         int32 [B, T]    (router = token)  d_t = i_t + 1
    grad.<name>   for every parameter, same shape as the parameter
Everything float is written as float32. Exit status 2 (with a message on stderr)
on an invalid config or a parameter file with missing/extra/misshaped tensors.

Tests import it: make_config / load_config, param_shapes, make_params, forward.
"""
import argparse
import configparser
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mort import read_mort, write_mort  # noqa: E402

torch.set_num_threads(1)

TERMS = ["loss.ce", "loss.aux", "loss.ec_z", "loss.bal", "loss.z"]

# ----------------------------------------------------------------------------
# config

MODEL_DEFAULTS = dict(vocab_size=256, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, n_layers=8,
                      seq_len=32, rms_eps=1e-5, rope_theta=10000.0, init_std=0.02)
MOR_DEFAULTS = dict(sharing="middle_cycle", n_recursions=3, router="expert", kv_mode="recursion",
                    capacity="", ec_alpha=0.1, aux_coeff=0.001, ec_z_coeff=0.0, tc_alpha=1.0,
                    bal_coeff=0.1, tc_z_coeff=1e-5)
DEFAULTS = {**MODEL_DEFAULTS, **MOR_DEFAULTS}
INT_KEYS = ["vocab_size", "d_model", "n_heads", "n_kv_heads", "d_ff", "n_layers", "seq_len", "n_recursions"]
FLOAT_KEYS = ["rms_eps", "rope_theta", "init_std", "ec_alpha", "aux_coeff", "ec_z_coeff", "tc_alpha",
              "bal_coeff", "tc_z_coeff"]
CHOICES = dict(sharing=["cycle", "sequence", "middle_cycle", "middle_sequence"],
               router=["none", "expert", "token"], kv_mode=["recursion", "share"])


class ConfigError(Exception):
    pass


class InputError(Exception):
    pass


def make_config(**kw):
    """Validated config from key=value overrides of DEFAULTS. Adds: head_dim, block (B), caps (c_r), k (k_r)."""
    unknown = sorted(set(kw) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}")
    c = argparse.Namespace(**{**DEFAULTS, **kw})
    for key in INT_KEYS:
        try:
            v = getattr(c, key)
            if isinstance(v, float) and v != int(v):
                raise ValueError
            setattr(c, key, int(v))
        except (TypeError, ValueError):
            raise ConfigError(f"{key} = {getattr(c, key)!r} is not an integer")
        if getattr(c, key) < 1:
            raise ConfigError(f"{key} = {getattr(c, key)} must be >= 1")
    for key in FLOAT_KEYS:
        try:
            setattr(c, key, float(getattr(c, key)))
        except (TypeError, ValueError):
            raise ConfigError(f"{key} = {getattr(c, key)!r} is not a number")
    for key, ok in CHOICES.items():
        if getattr(c, key) not in ok:
            raise ConfigError(f"{key} = {getattr(c, key)!r}; expected one of {ok}")

    if c.d_model % c.n_heads:
        raise ConfigError(f"d_model = {c.d_model} is not divisible by n_heads = {c.n_heads}")
    c.head_dim = c.d_model // c.n_heads
    if c.head_dim % 2:
        raise ConfigError(f"head_dim = {c.head_dim} must be even (RoPE)")
    if c.n_heads % c.n_kv_heads:
        raise ConfigError(f"n_heads = {c.n_heads} is not divisible by n_kv_heads = {c.n_kv_heads}")
    if c.rms_eps <= 0 or c.rope_theta <= 0:
        raise ConfigError("rms_eps and rope_theta must be > 0")

    Nr, L, cyc = c.n_recursions, c.n_layers, c.sharing in ("cycle", "middle_cycle")
    mid = c.sharing.startswith("middle")
    if Nr == 1:  # vanilla: every strategy is the plain decoder, all layers unique
        c.block = 0
        if c.router != "none":
            raise ConfigError("n_recursions = 1 is the plain decoder; it takes router = none")
    else:
        body = L - 2 if mid else L
        if body < Nr or body % Nr:
            lo, hi = max(Nr, body // Nr * Nr), (body // Nr + 1) * Nr
            near = sorted({x + 2 * mid for x in (lo, hi) if x != body})
            raise ConfigError(
                f"n_layers = {L} does not fit sharing = {c.sharing} with n_recursions = {Nr}: "
                f"{'n_layers - 2' if mid else 'n_layers'} must be a positive multiple of {Nr}; "
                f"nearest valid n_layers: {' or '.join(map(str, near))}")
        c.block = body // Nr
        if c.router != "none" and not cyc:
            raise ConfigError(f"router = {c.router} needs sharing = cycle or middle_cycle, not {c.sharing}")
        if c.kv_mode == "share" and not cyc:
            raise ConfigError(f"kv_mode = share needs sharing = cycle or middle_cycle, not {c.sharing}")

    cap = c.capacity
    if isinstance(cap, str):
        cap = [x for x in cap.replace(",", " ").split()]
    try:
        cap = [float(x) for x in cap] if cap else [(Nr - r) / Nr for r in range(Nr)]
    except ValueError:
        raise ConfigError(f"capacity = {c.capacity!r} is not a comma list of numbers")
    if c.router == "expert":
        if len(cap) != Nr:
            raise ConfigError(f"capacity has {len(cap)} entries; n_recursions = {Nr} needs {Nr}")
        if any(not 0 < x <= 1 for x in cap):
            raise ConfigError(f"capacities {cap} must lie in (0, 1]")
        if any(b > a for a, b in zip(cap, cap[1:])):
            raise ConfigError(f"capacities {cap} must be non-increasing")
        if c.kv_mode == "share" and cap[0] != 1.0:
            raise ConfigError(f"kv_mode = share needs capacity c_0 = 1 (got {cap[0]})")
    c.caps = cap
    c.k = [max(1, math.floor(x * c.seq_len + 1e-6)) for x in cap]  # k_r, T = full sequence length
    return c


def parse_config(text, source="<config>"):
    ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    try:
        ini.read_string(text, source=source)
    except configparser.Error as e:
        raise ConfigError(f"{source}: {e}")
    kw = {}
    for sec, keys in (("model", MODEL_DEFAULTS), ("mor", MOR_DEFAULTS)):
        if not ini.has_section(sec):
            continue
        for key, val in ini.items(sec):
            if key in keys:
                kw[key] = val.strip()
            else:
                print(f"mor_ref: warning: {source}: ignoring unknown key [{sec}] {key}", file=sys.stderr)
    return make_config(**kw)


def load_config(path):
    try:
        with open(path) as f:
            return parse_config(f.read(), path)
    except OSError as e:
        raise ConfigError(f"cannot read config: {e}")


# ----------------------------------------------------------------------------
# layout and parameters

def layer_plan(c):
    """(prelude prefixes, recursion blocks (lists of prefixes), coda prefixes)."""
    L, Nr = c.n_layers, c.n_recursions
    if Nr == 1:
        return [f"model.layers.{l}" for l in range(L)], [], []
    mid = c.sharing.startswith("middle")
    pre = ["model.layers.0"] if mid else []
    post = [f"model.layers.{L - 1}"] if mid else []
    shared = [f"model.shared_layers.{j}" for j in range(c.block)]
    if c.sharing in ("cycle", "middle_cycle"):
        blocks = [shared] * Nr  # recursion r, block layer j -> shared layer j
    else:  # sequence: one fixed-depth pass, unrolled layer l -> shared layer l // N_r
        blocks = [[shared[l // Nr] for l in range(c.block * Nr)]]
    return pre, blocks, post


def param_shapes(c):
    """name -> shape, in arena order: embed, prelude, shared layers, coda, final norm, routers."""
    V, D, F_, hd = c.vocab_size, c.d_model, c.d_ff, c.head_dim
    pre, blocks, post = layer_plan(c)
    prefixes = pre + [f"model.shared_layers.{j}" for j in range(c.block)] + post  # block = 0 if N_r = 1
    s = OrderedDict()
    s["model.embed_tokens.weight"] = (V, D)
    for P in prefixes:
        s[f"{P}.input_layernorm.weight"] = (D,)
        s[f"{P}.self_attn.q_proj.weight"] = (c.n_heads * hd, D)
        s[f"{P}.self_attn.k_proj.weight"] = (c.n_kv_heads * hd, D)
        s[f"{P}.self_attn.v_proj.weight"] = (c.n_kv_heads * hd, D)
        s[f"{P}.self_attn.o_proj.weight"] = (D, c.n_heads * hd)
        s[f"{P}.post_attention_layernorm.weight"] = (D,)
        s[f"{P}.mlp.gate_proj.weight"] = (F_, D)
        s[f"{P}.mlp.up_proj.weight"] = (F_, D)
        s[f"{P}.mlp.down_proj.weight"] = (D, F_)
    s["model.norm.weight"] = (D,)
    if c.router == "expert":
        for r in range(c.n_recursions):
            s[f"model.routers.{r}.weight"] = (1, D)
    elif c.router == "token":
        s["model.router.weight"] = (c.n_recursions, D)
    return s


def make_params(c, seed, dtype=torch.float64):
    """Every matrix N(0, init_std^2), every norm weight 1 (MODEL.md init)."""
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, shape in param_shapes(c).items():
        if len(shape) == 1:
            out[name] = torch.ones(shape, dtype=dtype)
        else:
            out[name] = (torch.randn(shape, generator=gen, dtype=torch.float64) * c.init_std).to(dtype)
    return out


# ----------------------------------------------------------------------------
# model

def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    """x [heads, n, hd] at absolute positions pos [n]; non-interleaved rotate_half."""
    half = x.shape[-1] // 2
    inv_freq = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / x.shape[-1])
    ang = pos.to(torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def layer(c, W, P, x, pos, shared_kv=None):
    """One decoder layer on the token set x [n, D] at positions pos [n] (ascending).
    shared_kv = (k, v) [Hkv, T, hd] of recursion 0 for kv_mode = share at r >= 1: then only
    queries are computed here and keys sit at positions 0..T-1. Returns (y, (k, v))."""
    n, H, Hkv, hd = x.shape[0], c.n_heads, c.n_kv_heads, c.head_dim
    w = lambda name: W[f"{P}.{name}.weight"]  # noqa: E731
    a = rmsnorm(x, w("input_layernorm"), c.rms_eps)
    q = rope((a @ w("self_attn.q_proj").T).view(n, H, hd).transpose(0, 1), pos, c.rope_theta)
    if shared_kv is None:
        k = rope((a @ w("self_attn.k_proj").T).view(n, Hkv, hd).transpose(0, 1), pos, c.rope_theta)
        v = (a @ w("self_attn.v_proj").T).view(n, Hkv, hd).transpose(0, 1)
        kpos = pos
    else:
        k, v = shared_kv
        kpos = torch.arange(k.shape[1])
    rep = H // Hkv  # query head h uses kv head h // rep
    kk, vv = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    att = q @ kk.transpose(1, 2) / math.sqrt(hd)                       # [H, n, nk]
    att = att.masked_fill(kpos[None, None, :] > pos[None, :, None], float("-inf"))
    o = (torch.softmax(att, -1) @ vv).transpose(0, 1).reshape(n, H * hd)
    h = x + o @ w("self_attn.o_proj").T
    m = rmsnorm(h, w("post_attention_layernorm"), c.rms_eps)
    y = h + (F.silu(m @ w("mlp.gate_proj").T) * (m @ w("mlp.up_proj").T)) @ w("mlp.down_proj").T
    return y, (k, v)


def first_argmax(p):
    """argmax over the last dim, ties -> lowest index."""
    idx = torch.arange(p.shape[-1]).expand_as(p)
    return torch.where(p == p.max(-1, keepdim=True).values, idx, p.shape[-1]).min(-1).values


def forward(c, W, tokens, trace=None):
    """Losses and routing for a batch. W: name -> tensor; tokens: int [B, T+1].
    Returns {'loss', 'loss.ce', ..., 'selected.{r}' or 'depth'}. If trace is a dict, it is
    filled with internals for the self-checks: trace['expert'] (per b, r: S, g, h_before,
    h_after) and trace['kv0'] (per b, j: recursion-0 keys/values after RoPE)."""
    tokens = torch.as_tensor(tokens).long()
    B, T, Nr = tokens.shape[0], c.seq_len, c.n_recursions
    assert tokens.shape[1] == T + 1
    dt = W["model.embed_tokens.weight"].dtype
    pre, blocks, post = layer_plan(c)
    share = c.kv_mode == "share"
    zero = torch.zeros((), dtype=dt)
    tot = {k: zero for k in TERMS}
    selected = [[] for _ in range(Nr)]
    depth = []
    if trace is not None:
        trace.setdefault("expert", [])
        trace.setdefault("kv0", [])

    for b in range(B):
        inp, tgt = tokens[b, :T], tokens[b, 1:]
        pos = torch.arange(T)
        h = W["model.embed_tokens.weight"][inp]
        for P in pre:
            h = layer(c, W, P, h, pos)[0]

        kv0 = {}  # block layer j -> recursion 0's (k, v) over all T tokens (kv_mode = share)

        def block(r, x, p):  # the block's layers on the token set x at positions p
            for j, P in enumerate(blocks[r]):
                x, kv = layer(c, W, P, x, p, kv0[j] if share and r > 0 else None)
                if r == 0:
                    kv0[j] = kv
                    if trace is not None:
                        trace["kv0"].append(dict(b=b, j=j, P=P, k=kv[0], v=kv[1]))
            return x

        if c.router == "none":  # fixed depth: every layer on all T tokens
            for r in range(len(blocks)):
                h = block(r, h, pos)

        elif c.router == "expert":
            S = pos  # candidates C = S_{r-1}, sorted absolute positions
            for r in range(Nr):
                n = S.shape[0]
                s = h[S] @ W[f"model.routers.{r}.weight"][0]          # raw router logits [n]
                g = c.ec_alpha * torch.sigmoid(s)
                top = torch.sort(g.detach(), descending=True, stable=True).indices[:c.k[r]]
                idx = torch.sort(top).values                          # into C, ascending
                y01 = torch.zeros(n, dtype=dt)
                y01[idx] = 1.0
                tot["loss.aux"] = tot["loss.aux"] + F.binary_cross_entropy_with_logits(s, y01, reduction="sum") / n
                tot["loss.ec_z"] = tot["loss.ec_z"] + (s * s).sum() / n
                Sr = S[idx]
                y = block(r, h[Sr], Sr)
                h_new = h.index_add(0, Sr, g[idx, None] * y)           # H[S_r] += g * Block(H[S_r])
                if trace is not None:
                    trace["expert"].append(dict(b=b, r=r, C=S, s=s, g=g, S=Sr, h_before=h, h_after=h_new))
                h, S = h_new, Sr
                selected[r].append(Sr)

        else:  # token choice
            x, out = h, h
            logits = x @ W["model.router.weight"].T                   # [T, N_r]
            p = c.tc_alpha * torch.softmax(logits, -1)
            i = first_argmax(p.detach())
            g = p.gather(1, i[:, None])[:, 0]
            for r in range(Nr):
                A = torch.nonzero(i >= r)[:, 0]
                if A.numel() == 0:
                    break
                y = block(r, x[A], A)
                ex, go = i[A] == r, i[A] > r
                out = out.index_add(0, A[ex], g[A[ex], None] * y[ex])  # gate once, at exit
                x = x.index_copy(0, A[go], y[go])                     # ungated hand-off
            h = out
            f = Nr * torch.bincount(i, minlength=Nr).to(dt) / T      # constant
            tot["loss.bal"] = tot["loss.bal"] + (p.mean(0) * f).sum()
            tot["loss.z"] = tot["loss.z"] + (torch.logsumexp(logits, -1) ** 2).sum() / T
            depth.append(i + 1)

        for P in post:
            h = layer(c, W, P, h, pos)[0]
        logits = rmsnorm(h, W["model.norm.weight"], c.rms_eps) @ W["model.embed_tokens.weight"].T
        tot["loss.ce"] = tot["loss.ce"] + F.cross_entropy(logits, tgt, reduction="sum") / T

    out = {k: v / B for k, v in tot.items()}
    loss = out["loss.ce"]
    if c.router == "expert":
        loss = loss + c.aux_coeff * out["loss.aux"] + c.ec_z_coeff * out["loss.ec_z"]
        for r in range(Nr):
            out[f"selected.{r}"] = torch.stack(selected[r])
    elif c.router == "token":
        loss = loss + c.bal_coeff * out["loss.bal"] + c.tc_z_coeff * out["loss.z"]
        out["depth"] = torch.stack(depth)
    out["loss"] = loss
    return out


# ----------------------------------------------------------------------------
# command line

def check_inputs(c, tensors):
    """Validate a loaded .mort against the config. Returns (params as numpy, tokens)."""
    shapes = param_shapes(c)
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise InputError(f"missing parameter(s): {', '.join(missing)}")
    extra = [n for n in tensors if n not in shapes and n != "tokens"]
    if extra:
        raise InputError(f"unexpected tensor(s) (not parameters of this config): {', '.join(extra)}")
    for n, shape in shapes.items():
        if tuple(tensors[n].shape) != shape:
            raise InputError(f"{n} has shape {list(tensors[n].shape)}, expected {list(shape)}")
        if tensors[n].dtype != np.float32:
            raise InputError(f"{n} must be float32 (dtype 0)")
    if "tokens" not in tensors:
        raise InputError("missing tensor: tokens (int32 [B, T+1])")
    tok = tensors["tokens"]
    if tok.dtype != np.int32 or tok.ndim != 2 or tok.shape[0] < 1 or tok.shape[1] != c.seq_len + 1:
        raise InputError(f"tokens: {tok.dtype} {list(tok.shape)}, expected int32 [B, {c.seq_len + 1}]")
    if tok.min() < 0 or tok.max() >= c.vocab_size:
        raise InputError(f"tokens out of range [0, {c.vocab_size})")
    return OrderedDict((n, tensors[n]) for n in shapes), tok


def main(argv=None):
    ap = argparse.ArgumentParser(description="mor-dist PyTorch reference (docs/MODEL.md)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    args = ap.parse_args(argv)
    try:
        c = load_config(args.config)
        try:
            tensors = read_mort(args.params)
        except (OSError, ValueError) as e:
            raise InputError(str(e))
        np_params, tok = check_inputs(c, tensors)
    except (ConfigError, InputError) as e:
        print(f"mor_ref: error: {e}", file=sys.stderr)
        return 2

    dt = torch.float64 if args.dtype == "float64" else torch.float32
    W = OrderedDict((n, torch.tensor(a, dtype=dt, requires_grad=True)) for n, a in np_params.items())
    res = forward(c, W, torch.from_numpy(tok.astype(np.int64)))
    res["loss"].backward()

    out = OrderedDict()
    for k in ["loss"] + TERMS:
        out[k] = res[k].detach().reshape(1)
    for k in res:
        if k.startswith("selected.") or k == "depth":
            out[k] = res[k].to(torch.int32)
    for n, p in W.items():
        out[f"grad.{n}"] = p.grad if p.grad is not None else torch.zeros_like(p)
    write_mort(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
