#!/usr/bin/python3
"""Self-checks of the PyTorch reference (mor_ref.py) so that it cannot be silently wrong.

    /usr/bin/python3 tests/reference/test_reference_selfcheck.py

- an independent numpy implementation (loops per token and head, layout derived from the
  MODEL.md table by unrolled layer index, kv share done the upstream way: the block runs on
  all T tokens against recursion 0's K/V and the outputs are gathered) must give the same
  losses and routing for every valid sharing x router x kv_mode, and for N_r = 1;
- finite-difference directional derivatives of every loss term match autograd;
- expert choice: unselected rows unchanged, S_r nested and the top-k of g; tie rules;
- kv share: the shared k_proj/v_proj gradient flows only through recursion 0's K/V;
- micro-batch invariance of every term and of the gradients;
- .mort round trip and byte layout; the command line, including its error exits.
Prints one line per test and finally "N passed, M failed"; exits 1 on failure.
"""
import math
import os
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mor_ref as M  # noqa: E402
from mort import read_mort, write_mort  # noqa: E402

torch.set_num_threads(1)

TINY = dict(vocab_size=11, d_model=8, n_heads=2, n_kv_heads=1, d_ff=12, seq_len=6, init_std=0.2,
            n_recursions=3, aux_coeff=0.1, ec_z_coeff=0.05, bal_coeff=0.1, tc_z_coeff=0.05)


def tiny(**kw):
    kw = {**TINY, **kw}
    if "n_layers" not in kw:  # B = 2
        kw["n_layers"] = 2 * kw["n_recursions"] + (2 if kw["sharing"].startswith("middle") else 0)
    return M.make_config(**kw)


def variants():
    """Every valid (sharing, router, kv_mode, capacity) with N_r = 3."""
    out = []
    for sh in ["cycle", "sequence", "middle_cycle", "middle_sequence"]:
        out.append(dict(sharing=sh, router="none", kv_mode="recursion"))
    for sh in ["cycle", "middle_cycle"]:
        out.append(dict(sharing=sh, router="none", kv_mode="share"))
        for kv in ["recursion", "share"]:
            out.append(dict(sharing=sh, router="expert", kv_mode=kv))
            out.append(dict(sharing=sh, router="token", kv_mode=kv))
    out.append(dict(sharing="middle_cycle", router="expert", kv_mode="recursion", capacity="1, 0.5, 0.5"))
    out.append(dict(sharing="cycle", router="expert", kv_mode="recursion", capacity="0.7,0.5,0.2"))
    out.append(dict(sharing="cycle", router="expert", kv_mode="share", capacity="1,0.3,0.1"))
    return out


def params(c, seed, noisy_norms=True):
    """make_params, with the norm weights jittered so that a mixed-up norm would show."""
    W = M.make_params(c, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    for n, p in W.items():
        if noisy_norms and p.dim() == 1:
            p += 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype)
    return W


def tokens_for(c, B, seed):
    return torch.randint(0, c.vocab_size, (B, c.seq_len + 1), generator=torch.Generator().manual_seed(seed))


def close(a, b, tol, what):
    a, b = float(a), float(b)
    if not abs(a - b) <= tol * max(1.0, abs(a), abs(b)):
        raise AssertionError(f"{what}: {a!r} vs {b!r} (diff {abs(a - b):.3e})")


# ----------------------------------------------------------------------------
# independent numpy implementation (forward only)

def naive(c, Wt, tokens):
    W = {n: p.detach().numpy().astype(np.float64) for n, p in Wt.items()}
    tokens = np.asarray(tokens)
    L, Nr, T, D = c.n_layers, c.n_recursions, c.seq_len, c.d_model
    H, Hkv = c.n_heads, c.n_kv_heads
    hd, half, grp = D // H, D // H // 2, H // Hkv
    mid, cyc = c.sharing.startswith("middle"), c.sharing in ("cycle", "middle_cycle")
    Bk = ((L - 2) if mid else L) // Nr if Nr > 1 else 0

    def unrolled(l):  # MODEL.md layout table -> (prefix, recursion index or None)
        if Nr == 1 or (mid and l in (0, L - 1)):
            return f"model.layers.{l}", None
        i = l - 1 if mid else l
        if cyc:
            return f"model.shared_layers.{i % Bk}", i // Bk
        return f"model.shared_layers.{i // Nr}", None

    def rms(x, w):
        return x / math.sqrt(float(np.mean(x * x)) + c.rms_eps) * w

    def rot(x, p):
        y = np.empty_like(x)
        for i in range(half):
            a = p * c.rope_theta ** (-2.0 * i / hd)
            y[i] = x[i] * math.cos(a) - x[i + half] * math.sin(a)
            y[i + half] = x[i + half] * math.cos(a) + x[i] * math.sin(a)
        return y

    def silu(x):
        return x / (1.0 + np.exp(-x))

    def nlayer(P, rows, pos, kvsrc=None):
        """rows: list of D-vectors at positions pos. kvsrc: {position: (k heads, v heads)}."""
        w = lambda s: W[f"{P}.{s}.weight"]  # noqa: E731
        qs, own = [], {}
        for x, p in zip(rows, pos):
            a = rms(x, w("input_layernorm"))
            q, k, v = w("self_attn.q_proj") @ a, w("self_attn.k_proj") @ a, w("self_attn.v_proj") @ a
            qs.append([rot(q[h * hd:(h + 1) * hd], p) for h in range(H)])
            own[p] = ([rot(k[h * hd:(h + 1) * hd], p) for h in range(Hkv)], [v[h * hd:(h + 1) * hd] for h in range(Hkv)])
        keys = own if kvsrc is None else kvsrc
        out = []
        for x, p, q in zip(rows, pos, qs):
            o = []
            for h in range(H):
                vis = sorted(pk for pk in keys if pk <= p)
                sc = [float(q[h] @ keys[pk][0][h // grp]) / math.sqrt(hd) for pk in vis]
                mx = max(sc)
                e = [math.exp(s - mx) for s in sc]
                o.append(sum(ei / sum(e) * keys[pk][1][h // grp] for ei, pk in zip(e, vis)))
            hh = x + w("self_attn.o_proj") @ np.concatenate(o)
            m = rms(hh, w("post_attention_layernorm"))
            out.append(hh + w("mlp.down_proj") @ (silu(w("mlp.gate_proj") @ m) * (w("mlp.up_proj") @ m)))
        return out, own

    res = {k: 0.0 for k in M.TERMS}
    sel, depth = [[] for _ in range(Nr)], []
    for b in range(tokens.shape[0]):
        Hs = [W["model.embed_tokens.weight"][t].copy() for t in tokens[b, :T]]
        allpos = list(range(T))
        kv0, S, tc = {}, allpos, None

        def run_block(r, l0, rows_of, active):
            """Block layers l0..l0+Bk-1 (recursion r) for the active positions; rows_of(p) = input row."""
            if c.kv_mode == "share" and r > 0:  # upstream way: all T tokens vs recursion 0's K/V, then gather
                rows = [rows_of(p) for p in allpos]
                for jj in range(Bk):
                    rows, _ = nlayer(unrolled(l0 + jj)[0], rows, allpos, kv0[jj])
                return {p: rows[p] for p in active}
            rows = [rows_of(p) for p in active]
            for jj in range(Bk):
                rows, own = nlayer(unrolled(l0 + jj)[0], rows, active)
                if r == 0:
                    kv0[jj] = own
            return dict(zip(active, rows))

        l = 0
        while l < L:
            P, r = unrolled(l)
            if r is None:
                Hs, _ = nlayer(P, Hs, allpos)
                l += 1
                continue
            if c.router == "none":
                ys = run_block(r, l, lambda p: Hs[p], allpos)
                Hs = [ys[p] for p in allpos]
            elif c.router == "expert":
                th = W[f"model.routers.{r}.weight"][0]
                s = [float(Hs[p] @ th) for p in S]
                g = [c.ec_alpha / (1.0 + math.exp(-x)) for x in s]
                k = max(1, math.floor(c.caps[r] * T + 1e-6))
                order = sorted(range(len(S)), key=lambda i: (-g[i], S[i]))[:k]
                new = sorted(S[i] for i in order)
                n = len(S)
                for i, p in enumerate(S):
                    yv = 1.0 if p in new else 0.0
                    res["loss.aux"] += (max(s[i], 0) - s[i] * yv + math.log1p(math.exp(-abs(s[i])))) / n
                    res["loss.ec_z"] += s[i] ** 2 / n
                ys = run_block(r, l, lambda p: Hs[p], new)
                gate = {p: g[i] for i, p in enumerate(S)}
                for p in new:
                    Hs[p] = Hs[p] + gate[p] * ys[p]
                S = new
                sel[r].append(new)
            else:
                if r == 0:
                    lg = [W["model.router.weight"] @ Hs[p] for p in allpos]
                    pr = []
                    for v in lg:
                        e = np.exp(v - v.max())
                        pr.append(c.tc_alpha * e / e.sum())
                    ii = []
                    for v in pr:
                        best = 0
                        for j in range(1, Nr):
                            if v[j] > v[best]:
                                best = j
                        ii.append(best)
                    tc = dict(x=[h.copy() for h in Hs], out=[h.copy() for h in Hs], i=ii, p=pr)
                    for j in range(Nr):
                        cnt = sum(1 for t in ii if t == j)
                        res["loss.bal"] += np.mean([v[j] for v in pr]) * Nr * cnt / T
                    for v in lg:
                        res["loss.z"] += (v.max() + math.log(np.exp(v - v.max()).sum())) ** 2 / T
                    depth.append([t + 1 for t in ii])
                A = [t for t in allpos if tc["i"][t] >= r]
                if A:
                    ys = run_block(r, l, lambda p: tc["x"][p], A)
                    for t in A:
                        if tc["i"][t] == r:
                            tc["out"][t] = tc["out"][t] + tc["p"][t][r] * ys[t]
                        else:
                            tc["x"][t] = ys[t]
                if r == Nr - 1:
                    Hs = tc["out"]
            l += Bk
        E = W["model.embed_tokens.weight"]
        for t in range(T):
            lo = E @ rms(Hs[t], W["model.norm.weight"])
            res["loss.ce"] += (lo.max() + math.log(np.exp(lo - lo.max()).sum()) - lo[tokens[b, t + 1]]) / T
    B = tokens.shape[0]
    res = {k: v / B for k, v in res.items()}
    res["loss"] = res["loss.ce"] + (c.aux_coeff * res["loss.aux"] + c.ec_z_coeff * res["loss.ec_z"]
                                    if c.router == "expert" else 0.0) \
        + (c.bal_coeff * res["loss.bal"] + c.tc_z_coeff * res["loss.z"] if c.router == "token" else 0.0)
    res["sel"], res["depth"] = sel, depth
    return res


def compare_with_naive(c, seed, B=2):
    W = params(c, seed)
    tok = tokens_for(c, B, seed)
    ref = M.forward(c, W, tok)
    nv = naive(c, W, tok.numpy())
    for k in ["loss"] + M.TERMS:
        close(ref[k], nv[k], 1e-10, f"{k}")
    if c.router == "expert":
        for r in range(c.n_recursions):
            assert ref[f"selected.{r}"].tolist() == nv["sel"][r], f"selected.{r}"
    if c.router == "token":
        assert ref["depth"].tolist() == nv["depth"], "depth"
    return ref


# ----------------------------------------------------------------------------
# tests

def test_mort_roundtrip():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.mort")
        a = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
        t = {"z.first": a, "b": np.array([[1, -2]], dtype=np.int64), "a": np.float32([0.5]),
             "empty": np.zeros((0, 4), np.float32), "torch": torch.tensor([1.25, 2.5], dtype=torch.float64)}
        write_mort(p, t)
        r = read_mort(p)
        assert list(r) == list(t), list(r)
        assert r["z.first"].dtype == np.float32 and np.array_equal(r["z.first"], a.astype(np.float32))
        assert r["b"].dtype == np.int32 and r["b"].tolist() == [[1, -2]]
        assert r["empty"].shape == (0, 4) and r["torch"].tolist() == [1.25, 2.5]
        # exact byte layout of a one-tensor file
        write_mort(p, {"ab": np.int32([[7], [8]])})
        want = b"MORTNSR1" + struct.pack("<I", 1) + struct.pack("<I", 2) + b"ab" + struct.pack("<II", 1, 2) \
            + struct.pack("<qq", 2, 1) + struct.pack("<ii", 7, 8)
        assert open(p, "rb").read() == want
        for bad in [b"MORTNSR2" + want[8:], want[:-1], want + b"\0"]:
            open(p, "wb").write(bad)
            try:
                read_mort(p)
            except ValueError:
                continue
            raise AssertionError("malformed file accepted")


def test_layout_names():
    c = tiny(sharing="middle_cycle", router="expert")
    names = list(M.param_shapes(c))
    pre = [n.rsplit(".", 2)[0] for n in names if "input_layernorm" in n]
    assert pre == ["model.layers.0", "model.shared_layers.0", "model.shared_layers.1", "model.layers.7"], pre
    assert names[0] == "model.embed_tokens.weight"
    assert names[-4:] == ["model.norm.weight"] + [f"model.routers.{r}.weight" for r in range(3)]
    assert M.param_shapes(c)["model.layers.0.self_attn.k_proj.weight"] == (4, 8)
    c = tiny(sharing="sequence", router="none", n_recursions=2, n_layers=6)
    assert M.layer_plan(c)[1] == [[f"model.shared_layers.{l // 2}" for l in range(6)]]
    c = tiny(sharing="middle_sequence", router="none", n_recursions=1, n_layers=4)
    pre = [n.rsplit(".", 2)[0] for n in M.param_shapes(c) if "input_layernorm" in n]
    assert pre == [f"model.layers.{l}" for l in range(4)], pre
    c = tiny(sharing="cycle", router="token", n_recursions=2, n_layers=4)
    assert M.param_shapes(c)["model.router.weight"] == (2, 8)


def test_config_errors():
    def bad(match, **kw):
        try:
            tiny(**kw)
        except M.ConfigError as e:
            assert match in str(e), f"{match!r} not in {e}"
            return
        raise AssertionError(f"accepted {kw}")
    bad("nearest valid n_layers: 6 or 9", sharing="cycle", n_layers=7)
    bad("nearest valid n_layers: 8 or 11", sharing="middle_cycle", n_layers=9)
    bad("nearest valid n_layers: 5", sharing="middle_sequence", n_layers=3)
    bad("needs sharing = cycle", sharing="sequence", router="expert")
    bad("needs sharing = cycle", sharing="middle_sequence", router="none", kv_mode="share")
    bad("c_0 = 1", sharing="cycle", router="expert", kv_mode="share", capacity="0.9,0.5,0.2")
    bad("non-increasing", sharing="cycle", router="expert", capacity="1,0.3,0.5")
    bad("(0, 1]", sharing="cycle", router="expert", capacity="1,0.5,0")
    bad("needs 3", sharing="cycle", router="expert", capacity="1,0.5")
    bad("n_kv_heads", sharing="cycle", n_kv_heads=3, n_heads=2)
    bad("router = none", sharing="cycle", router="token", n_recursions=1, n_layers=2)
    bad("expected one of", sharing="loop")
    # INI parsing: comments, empty capacity, defaults for missing keys
    c = M.parse_config("[model]\nvocab_size = 11  # V\nd_model=8\nn_heads=2\nn_kv_heads=1\nseq_len=6\n"
                       "n_layers = 4\n[mor]\nsharing = cycle\nn_recursions = 2\ncapacity =\n")
    assert (c.n_layers, c.d_ff, c.router, c.caps, c.k, c.ec_alpha) == (4, 128, "expert", [1.0, 0.5], [6, 3], 0.1)


def test_k_r():
    assert tiny(sharing="cycle", router="expert").k == [6, 4, 2]
    for Nr, want in [(2, [2048, 1024]), (3, [2048, 1365, 682]), (4, [2048, 1536, 1024, 512])]:
        c = M.make_config(seq_len=2048, n_recursions=Nr, n_layers=2 + 2 * Nr)
        assert c.k == want, (Nr, c.k)
    assert M.make_config(seq_len=10, capacity="1, 0.3, 0.01").k == [10, 3, 1]
    # c_r * T just below an integer in floating point (0.58 * 100 = 57.99999999999999): the + 1e-6 matters
    assert M.make_config(seq_len=100, capacity="1, 0.58, 0.29").k == [100, 58, 29]


def test_vanilla_vs_naive():
    for sh in ["cycle", "sequence", "middle_cycle", "middle_sequence"]:
        for L in [1, 3] if not sh.startswith("middle") else [2, 3]:
            compare_with_naive(tiny(sharing=sh, router="none", n_recursions=1, n_layers=L), seed=L)
    # N_r = 1 with a sharing strategy is the same model as any other strategy
    a = tiny(sharing="cycle", router="none", n_recursions=1, n_layers=3)
    b = tiny(sharing="middle_sequence", router="none", n_recursions=1, n_layers=3, kv_mode="share")
    assert list(M.param_shapes(a)) == list(M.param_shapes(b))
    W, tok = params(a, 5), tokens_for(a, 2, 5)
    assert float(M.forward(a, W, tok)["loss"]) == float(M.forward(b, W, tok)["loss"])


def test_variants_vs_naive():
    seen_nontrivial = {"expert": False, "token": False}
    for i, v in enumerate(variants()):
        c = tiny(**v)
        ref = compare_with_naive(c, seed=10 + i)
        if c.router == "expert":
            seen_nontrivial["expert"] |= any(ref[f"selected.{r}"][b].tolist() != list(range(c.k[r]))
                                             for r in range(3) for b in range(2))
        if c.router == "token":
            seen_nontrivial["token"] |= len(set(ref["depth"].flatten().tolist())) > 1
    assert all(seen_nontrivial.values()), f"routing trivial in every test: {seen_nontrivial}"
    # a 4:2 GQA / 2 layer block / T = 7 variant too
    c = tiny(sharing="middle_cycle", router="token", kv_mode="share", d_model=16, n_heads=4, n_kv_heads=2,
             seq_len=7, n_recursions=2, n_layers=6)
    compare_with_naive(c, seed=3)
    c = tiny(sharing="cycle", router="expert", d_model=16, n_heads=4, n_kv_heads=2, seq_len=7,
             n_recursions=2, n_layers=4, rope_theta=50.0)
    compare_with_naive(c, seed=4)


def test_gradcheck():
    eps = 1e-6
    for i, v in enumerate(variants() + [dict(sharing="cycle", router="none", n_recursions=1, n_layers=2)]):
        c = tiny(**v)
        W = params(c, seed=100 + i)
        tok = tokens_for(c, 2, 100 + i)
        for p in W.values():
            p.requires_grad_(True)
        out = M.forward(c, W, tok)
        routing = {k: out[k].tolist() for k in out if k.startswith("selected") or k == "depth"}
        terms = ["loss"] + M.TERMS
        grads = {}
        for k in terms:
            if out[k].requires_grad:
                grads[k] = torch.autograd.grad(out[k], list(W.values()), retain_graph=True, allow_unused=True)
        assert "loss" in grads
        gen = torch.Generator().manual_seed(i)
        for _ in range(3):
            d = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in W.values()]
            with torch.no_grad():
                outs = []
                for sgn in (1, -1):
                    Wp = {n: p + sgn * eps * dd for (n, p), dd in zip(W.items(), d)}
                    o = M.forward(c, Wp, tok)
                    assert {k: o[k].tolist() for k in routing} == routing, "routing changed under perturbation"
                    outs.append(o)
            for k in terms:
                fd = (float(outs[0][k]) - float(outs[1][k])) / (2 * eps)
                ad = sum(float((g * dd).sum()) for g, dd in zip(grads[k], d) if g is not None) if k in grads else 0.0
                close(ad, fd, 1e-6, f"{v} d{k}")
        # every parameter gets a gradient
        for (n, p), g in zip(W.items(), grads["loss"]):
            assert g is not None and float(g.abs().sum()) > 0, f"{v}: no gradient for {n}"


def test_expert_unselected_unchanged():
    for kv in ["recursion", "share"]:
        c = tiny(sharing="middle_cycle", router="expert", kv_mode=kv)
        W, tok = params(c, 7), tokens_for(c, 3, 7)
        tr = {}
        out = M.forward(c, W, tok, trace=tr)
        prev = {}
        for e in tr["expert"]:
            b, r, S, C = e["b"], e["r"], e["S"].tolist(), e["C"].tolist()
            assert C == prev.get(b, list(range(c.seq_len))), "candidates are not S_{r-1}"
            assert S == sorted(S) and len(S) == c.k[r] and set(S) <= set(C)
            g = e["g"].tolist()
            want = sorted(sorted(range(len(C)), key=lambda i: (-g[i], C[i]))[:c.k[r]])
            assert S == [C[i] for i in want], "S_r is not the top-k of g"
            assert out[f"selected.{r}"][b].tolist() == S
            for t in range(c.seq_len):
                same = torch.equal(e["h_before"][t], e["h_after"][t])
                assert same == (t not in S), f"row {t} (selected: {t in S}) changed={not same}"
            prev[b] = S


def test_tie_rules():
    # all router logits 0 -> all gates equal -> expert picks the lowest positions; token picks depth 1
    c = tiny(sharing="cycle", router="expert", capacity="1,0.5,0.34")
    W = params(c, 1)
    for r in range(3):
        W[f"model.routers.{r}.weight"].zero_()
    out = M.forward(c, W, tokens_for(c, 2, 1))
    assert [out[f"selected.{r}"][0].tolist() for r in range(3)] == [[0, 1, 2, 3, 4, 5], [0, 1, 2], [0, 1]]
    c = tiny(sharing="cycle", router="token")
    W = params(c, 1)
    W["model.router.weight"].zero_()
    assert M.forward(c, W, tokens_for(c, 2, 1))["depth"].tolist() == [[1] * 6] * 2
    # exact tie between depth 2 and 3 only -> 2
    W["model.router.weight"][0] = -1.0
    W["model.router.weight"][1:] = 0.0
    tr = M.forward(c, W, torch.zeros(2, 7, dtype=torch.long) + 3)["depth"]
    assert set(tr.flatten().tolist()) <= {1, 2}, tr
    assert M.first_argmax(torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.1, 0.5], [0.1, 0.2, 0.3]])).tolist() == [1, 0, 2]


def test_kv_share_grads_only_via_recursion0():
    # d loss / d Wk_j == the part flowing through recursion 0's keys (and likewise Wv): true in share
    # mode, false in recursion mode (there Wk is also used at r >= 1), so the check has teeth.
    for router in ["none", "expert", "token"]:
        for kv in ["share", "recursion"]:
            c = tiny(sharing="cycle", router=router, kv_mode=kv)
            W, tok = params(c, 21), tokens_for(c, 2, 21)
            for p in W.values():
                p.requires_grad_(True)
            tr = {}
            loss = M.forward(c, W, tok, trace=tr)["loss"]
            for j in range(c.block):
                for proj, key in [("k_proj", "k"), ("v_proj", "v")]:
                    w = W[f"model.shared_layers.{j}.self_attn.{proj}.weight"]
                    full = torch.autograd.grad(loss, w, retain_graph=True)[0]
                    ents = [e for e in tr["kv0"] if e["j"] == j]
                    gk = torch.autograd.grad(loss, [e[key] for e in ents], retain_graph=True)
                    via0 = sum(torch.autograd.grad(e[key], w, g, retain_graph=True)[0] for e, g in zip(ents, gk))
                    diff = float((full - via0).abs().max()) / float(full.abs().max())
                    if kv == "share":
                        assert diff < 1e-12, f"{router} share: {proj} gets gradient beyond recursion 0 ({diff})"
                    else:
                        assert diff > 1e-3, f"{router} recursion: check has no teeth ({diff})"
            # and share differs from recursion mode at all
    for router in ["none", "expert", "token"]:
        a, b = (tiny(sharing="cycle", router=router, kv_mode=kv) for kv in ["share", "recursion"])
        W, tok = params(a, 22), tokens_for(a, 2, 22)
        assert abs(float(M.forward(a, W, tok)["loss"]) - float(M.forward(b, W, tok)["loss"])) > 1e-6


def test_microbatch_invariance():
    for v in [dict(sharing="middle_cycle", router="expert", kv_mode="recursion"),
              dict(sharing="cycle", router="token", kv_mode="share"),
              dict(sharing="middle_sequence", router="none", kv_mode="recursion")]:
        c = tiny(**v)
        W, tok = params(c, 31), tokens_for(c, 4, 31)
        for p in W.values():
            p.requires_grad_(True)
        full = M.forward(c, W, tok)
        parts = [M.forward(c, W, tok[:2]), M.forward(c, W, tok[2:])]
        for k in ["loss"] + M.TERMS:
            close(full[k], (float(parts[0][k]) + float(parts[1][k])) / 2, 1e-12, f"{v} {k}")
        for k in full:
            if k.startswith("selected") or k == "depth":
                assert full[k].tolist() == parts[0][k].tolist() + parts[1][k].tolist()
        gf = torch.autograd.grad(full["loss"], list(W.values()))
        g0 = torch.autograd.grad(parts[0]["loss"], list(W.values()))
        g1 = torch.autograd.grad(parts[1]["loss"], list(W.values()))
        for a, b0, b1 in zip(gf, g0, g1):
            assert torch.allclose(a, (b0 + b1) / 2, rtol=1e-10, atol=1e-13)


def run_cli(d, ini, tensors, *extra):
    cfg, prm, out = (os.path.join(d, x) for x in ("c.ini", "p.mort", "o.mort"))
    open(cfg, "w").write(ini)
    write_mort(prm, tensors)
    if os.path.exists(out):
        os.remove(out)
    r = subprocess.run([sys.executable, os.path.join(HERE, "mor_ref.py"), "--config", cfg, "--params", prm,
                        "--out", out, *extra], capture_output=True, text=True)
    return r, (read_mort(out) if r.returncode == 0 else None)


def test_cli():
    ini = ("[model]\nvocab_size = 11\nd_model = 8\nn_heads = 2\nn_kv_heads = 1\nd_ff = 12\nn_layers = 8\n"
           "seq_len = 6\ninit_std = 0.2\n[mor]\nsharing = middle_cycle\nn_recursions = 3\nrouter = {router}\n"
           "kv_mode = recursion\ncapacity =  # default\naux_coeff = 0.1\n")
    with tempfile.TemporaryDirectory() as d:
        for router in ["expert", "token", "none"]:
            c = M.parse_config(ini.format(router=router))
            W = params(c, 41)
            tok = tokens_for(c, 3, 41)
            t = {n: p.float().numpy() for n, p in W.items()}
            t["tokens"] = tok.numpy().astype(np.int32)
            r, o = run_cli(d, ini.format(router=router), t)
            assert r.returncode == 0, r.stderr
            want = ["loss"] + M.TERMS + {"expert": ["selected.0", "selected.1", "selected.2"],
                                         "token": ["depth"], "none": []}[router] + [f"grad.{n}" for n in W]
            assert list(o) == want, list(o)
            for n, p in W.items():
                assert o[f"grad.{n}"].shape == tuple(p.shape) and o[f"grad.{n}"].dtype == np.float32
            assert all(o[k].shape == (1,) for k in ["loss"] + M.TERMS)
            # same as in-process on the float32-rounded parameters
            Wd = {n: torch.tensor(a, dtype=torch.float64, requires_grad=True) for n, a in t.items() if n != "tokens"}
            ref = M.forward(c, Wd, tok)
            ref["loss"].backward()
            for k in ["loss"] + M.TERMS:
                close(o[k][0], ref[k], 1e-6, f"cli {k}")
            for n, p in Wd.items():
                assert np.allclose(o[f"grad.{n}"], p.grad.numpy(), rtol=1e-5, atol=1e-7), n
            if router == "expert":
                assert o["selected.1"].dtype == np.int32 and o["selected.1"].shape == (3, 4)
                assert o["selected.2"].tolist() == ref["selected.2"].tolist()
            if router == "token":
                assert o["depth"].dtype == np.int32 and o["depth"].tolist() == ref["depth"].tolist()
            # float32 mode agrees with float64 to float32 accuracy
            r32, o32 = run_cli(d, ini.format(router=router), t, "--dtype", "float32")
            assert r32.returncode == 0, r32.stderr
            close(o32["loss"][0], o["loss"][0], 1e-5, "float32 loss")
            for n in W:
                g, g32 = o[f"grad.{n}"], o32[f"grad.{n}"]
                assert np.abs(g - g32).max() <= 1e-4 * max(1e-3, np.abs(g).max()), n

        # error exits
        c = M.parse_config(ini.format(router="expert"))
        good = {n: p.float().numpy() for n, p in params(c, 1).items()}
        good["tokens"] = tokens_for(c, 2, 1).numpy().astype(np.int32)
        cases = [
            ("missing parameter", ini.format(router="expert"),
             {k: v for k, v in good.items() if k != "model.routers.2.weight"}),
            ("has shape", ini.format(router="expert"),
             {**good, "model.norm.weight": np.ones(9, np.float32)}),
            ("tokens", ini.format(router="expert"), {**good, "tokens": good["tokens"][:, :5]}),
            ("unexpected tensor", ini.format(router="expert"), {**good, "model.router.weight": np.ones((3, 8))}),
            ("nearest valid n_layers", ini.format(router="expert").replace("n_layers = 8", "n_layers = 9"), good),
            ("non-increasing", ini.format(router="expert").replace("capacity =", "capacity = 1,0.2,0.5"), good),
        ]
        for match, cfg_text, tens in cases:
            r, _ = run_cli(d, cfg_text, tens)
            assert r.returncode == 2 and match in r.stderr, (match, r.returncode, r.stderr)


# ----------------------------------------------------------------------------

def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, f in tests:
        try:
            f()
        except Exception:
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
