#!/usr/bin/env bash
# `mor-dist export`: checkpoints (written on 2 ranks, so from two shard files) in the Hugging Face
# layout, read back by an independent safetensors reader written here (json + numpy, no torch or
# safetensors package) and compared bit for bit with the checkpoint as h5py reads it:
#   - vanilla (N_r = 1): exactly the LlamaForCausalLM tensor names of an 8-layer Llama (tied head:
#     no lm_head.weight), a config.json whose fields are the model's;
#   - split at --max-shard-size 1MB: several model-0000K-of-0000N files + the index JSON, whose
#     weight_map names every tensor once and whose total_size is the sum of the tensors;
#   - models with recursions, one per router x sharing the upstream MoR code can build (expert and
#     token, middle_cycle and cycle; expert with kv_mode share; no router with middle_sequence and
#     cycle): exactly the state-dict names of the upstream model, derived here from the variant's
#     settings, each name (every alias of the shared block, lm_head.weight) bit for bit equal to the
#     checkpoint tensor it stands for, every checkpoint tensor exported; config.json's upstream
#     groups (recursive, mor, kv_sharing) with upstream's names and value formats;
#   - logits: the PyTorch reference (tests/reference/mor_ref.py, float64) with the exported vanilla
#     weights gives the cross-entropy `mor-dist eval` computes from the checkpoint, within 1e-5 relative,
#     on 4 windows of a token shard written here; and so do the exported weights of the router-less
#     middle_sequence model read as a plain 8-layer Llama (its unrolled names);
#   - refusals: an existing --out, a bad size, no --ckpt (exit 2, nothing written).
source "$(dirname "$0")/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
# name config overrides...: the variants exported (the test's Python knows them by name too)
VARIANTS=(
  "vanilla tiny_vanilla.ini"
  "expert_mc tiny_mor.ini"
  "expert_cycle tiny_mor.ini --mor.sharing cycle --model.n_layers 9"
  "expert_share tiny_mor.ini --mor.kv_mode share"
  "token_mc tiny_mor_token.ini"
  "token_cycle tiny_mor_token.ini --mor.sharing cycle --model.n_layers 9"
  "rec_mseq tiny_mor.ini --mor.router none --mor.sharing middle_sequence"
  "rec_cycle tiny_mor.ini --mor.router none --mor.sharing cycle --model.n_layers 9 --mor.kv_mode share"
)
for v in "${VARIANTS[@]}"; do
  read -r -a a <<< "$v"
  mpirun --oversubscribe --bind-to none -np 2 "$MOR_BIN" train --config "$MOR_SRC/configs/${a[1]}" "${a[@]:2}" \
    --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.steps 3 --train.peak_gflops 100 \
    --train.threads 1 --ckpt.dir "$WORK/ck_${a[0]}" > /dev/null
  "$MOR_BIN" export --ckpt "$WORK/ck_${a[0]}" --out "$WORK/hf_${a[0]}" | tee -a "$WORK/export.log"
done
"$MOR_BIN" export --ckpt "$WORK/ck_vanilla" --out "$WORK/hf_split" --max-shard-size 1MB > /dev/null
echo "split export: $(ls "$WORK/hf_split" | tr '\n' ' ')"

/usr/bin/python3 - "$WORK" <<'PY'
import glob, json, os, struct, sys
import h5py, numpy as np
work = sys.argv[1]

def read_safetensors(path):  # the format from its specification, independently of mor-dist
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw) and (8 + n) % 8 == 0, path
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    assert meta.get("format") == "pt", meta
    data, out, end = raw[8 + n:], {}, 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        assert t["dtype"] == "F32", (name, t)
        b, e = t["data_offsets"]
        assert b == end and e - b == 4 * int(np.prod(t["shape"])), (name, t)  # contiguous, no gaps
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(t["shape"])
        end = e
    assert end == len(data), f"{path}: {len(data) - end} trailing bytes"
    return out

def checkpoint(root):
    step = open(f"{root}/latest").read().strip()
    with h5py.File(f"{root}/{step}/index.h5", "r") as f:
        names = []
        f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) and k.startswith("model.") else None)
        return {k: np.asarray(f[k][()], dtype=np.float32) for k in names}

def same(exported, ckpt, what):
    assert set(exported) == set(ckpt), (what, sorted(set(exported) ^ set(ckpt)))
    for k, v in ckpt.items():
        e = exported[k]
        assert e.size == v.size and e.tobytes() == v.reshape(e.shape).tobytes(), f"{what}: {k} differs"
    print(f"{what}: {len(ckpt)} tensors bit for bit equal to the checkpoint")

van = checkpoint(f"{work}/ck_vanilla")
one = read_safetensors(f"{work}/hf_vanilla/model.safetensors")
same(one, van, "vanilla, one file")
want = {"model.embed_tokens.weight", "model.norm.weight"}
for l in range(8):
    p = f"model.layers.{l}."
    want |= {p + s for s in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                             "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                             "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")}
assert set(one) == want, sorted(set(one) ^ want)
assert one["model.layers.0.self_attn.k_proj.weight"].shape == (64, 128)
cfg = json.load(open(f"{work}/hf_vanilla/config.json"))
expect = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024, "hidden_size": 128,
          "intermediate_size": 352, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
          "head_dim": 32, "hidden_act": "silu", "max_position_embeddings": 64, "tie_word_embeddings": True,
          "attention_bias": False, "mlp_bias": False}
bad = {k: (cfg.get(k), v) for k, v in expect.items() if cfg.get(k) != v}
assert not bad, bad
assert "mor" not in cfg
print("vanilla: LlamaForCausalLM tensor names and config.json fields")

idx = json.load(open(f"{work}/hf_split/model.safetensors.index.json"))
files = sorted(glob.glob(f"{work}/hf_split/model-*-of-*.safetensors"))
assert len(files) >= 2 and set(idx["weight_map"].values()) == {os.path.basename(f) for f in files}, (files, idx)
split = {}
for f in files:
    part = read_safetensors(f)
    assert os.path.getsize(f) < 1e6 + 64e3 or len(part) == 1, f  # the limit, or one tensor larger than it
    for k in part:
        assert idx["weight_map"][k] == os.path.basename(f), k
    split.update(part)
same(split, van, f"vanilla, {len(files)} files")
assert idx["metadata"]["total_size"] == sum(v.nbytes for v in van.values())

# Models with recursions. The upstream MoR code builds its model as a Llama of the full unrolled
# depth, ties the layers by the sharing strategy, then (with a router) regroups model.layers; its
# state dict lists a shared tensor under every name that reaches it. The expected names and the
# checkpoint tensor behind each are derived here from the variant's settings alone.
LAYER = ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
         "self_attn.o_proj.weight", "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
         "mlp.down_proj.weight"]
#            name           router    sharing           L  kv_mode
VARIANTS = [("expert_mc",    "expert", "middle_cycle",    8, "recursion"),
            ("expert_cycle", "expert", "cycle",           9, "recursion"),
            ("expert_share", "expert", "middle_cycle",    8, "share"),
            ("token_mc",     "token",  "middle_cycle",    8, "recursion"),
            ("token_cycle",  "token",  "cycle",           9, "recursion"),
            ("rec_mseq",     "none",   "middle_sequence", 8, "recursion"),
            ("rec_cycle",    "none",   "cycle",           9, "share")]
R = 3

def upstream_names(router, sharing, L):
    """{upstream state-dict name: the checkpoint (mor-dist) tensor it carries}"""
    mid = sharing.startswith("middle_")
    B = (L - 2 * mid) // R
    m = {"model.embed_tokens.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight",
         "lm_head.weight": "model.embed_tokens.weight"}
    def layer(dst, src):
        for t in LAYER:
            m[dst + t] = src + t
    def section(i):  # the shared layer that layer i of the recursion section uses
        return f"model.shared_layers.{i % B if sharing.endswith('cycle') else i // R}."
    first, last = "model.layers.0.", f"model.layers.{L - 1}."
    if router == "none":  # the recursive Llama: no regrouping, every unrolled layer by its index
        for l in range(L):
            layer(f"model.layers.{l}.", first if mid and l == 0 else last if mid and l == L - 1 else section(l - mid))
        return m
    if mid:
        layer("model.layers.0.", first)
    if router == "expert":  # one MoR layer per recursion: its block of B layers and its router
        for r in range(R):
            p = f"model.layers.{r + mid}."
            for j in range(B):
                layer(f"{p}block.{j}.", section(j))
            m[p + "mor_router.router.weight"] = f"model.routers.{r}.weight"
        if mid:
            layer(f"model.layers.{R + 1}.", last)
    else:  # one MoR layer for all recursions: block_list[r][j]; without middle layers it IS model.layers
        p = "model.layers.1." if mid else "model.layers."
        for r in range(R):
            for j in range(B):
                layer(f"{p}block_list.{r}.{j}.", section(j))
        m[p + "mor_router.router.weight"] = "model.router.weight"
        if mid:
            layer("model.layers.2.", last)
    return m

for name, router, sharing, L, kv in VARIANTS:
    got = read_safetensors(f"{work}/hf_{name}/model.safetensors")
    ck = checkpoint(f"{work}/ck_{name}")
    want = upstream_names(router, sharing, L)
    assert set(got) == set(want), (name, sorted(set(got) ^ set(want)))
    for k, src in want.items():
        e, v = got[k], ck[src]
        assert e.shape == v.shape, (name, k, e.shape, v.shape)
        assert e.tobytes() == v.tobytes(), f"{name}: {k} differs from the checkpoint's {src}"
    assert set(want.values()) == set(ck), (name, sorted(set(ck) - set(want.values())))
    if router != "none":
        rk = next(k for k in want if k.endswith("mor_router.router.weight"))
        assert got[rk].shape == ((1, 128) if router == "expert" else (R, 128)), (name, rk, got[rk].shape)
    cfg = json.load(open(f"{work}/hf_{name}/config.json"))
    B = (L - 2 * sharing.startswith("middle_")) // R
    expect = {"architectures": ["MoRLlamaForCausalLM" if router != "none" else "LlamaForCausalLM"],
              "model_type": "llama", "num_hidden_layers": L, "hidden_size": 128, "tie_word_embeddings": True,
              "recursive": {"enable": True, "sharing": sharing, "num_recursion": R, "base_depth": B, "ln_share": True},
              "kv_sharing": {"enable": kv == "share", "sharing": sharing if kv == "share" else None,
                             "num_recursion": R if kv == "share" else None, "base_depth": B if kv == "share" else None,
                             "update_cache": False}}
    if router == "none":
        expect["mor"] = {"enable": False}
    else:
        caps = ",".join(str((R - i) / R) for i in range(R))  # upstream's default capacity string
        expect["mor"] = {"enable": True, "type": router, "capacity": caps, "rand_router": False, "router_type": "linear",
                         "temp": 1.0, "z_loss": router == "token", "z_coeff": 0.0 if router == "expert" else 1e-05,
                         "expert": {"router_func": "sigmoid", "alpha": 0.1, "sampling": "aux_loss", "coeff": 0.001,
                                    "gating": "weighted", "cap_warmup_step": 0},
                         "token": {"router_func": "softmax", "alpha": 1.0, "balancing": "loss", "coeff": 0.1,
                                   "gating": "weighted", "bal_warmup_step": 0}}
    bad = {k: (cfg.get(k), v) for k, v in expect.items() if cfg.get(k) != v}
    assert not bad, (name, bad)
    md = cfg["mor_dist"]
    assert (md["router"], md["sharing"], md["n_recursions"], md["kv_mode"], md["block_size"]) == (router, sharing, R, kv, B), md
    n_alias = len(want) - len(ck)
    print(f"{name}: {len(want)} upstream names ({n_alias} aliases) bit for bit equal to the checkpoint; "
          f"config.json mor={json.dumps(cfg['mor'])[:60]}...")
PY

# Cross-entropy of the exported weights (reference) vs mor-dist's own from the checkpoint: 4 windows
# of 64 + 1 tokens in an llm.c shard (the eval windows start every 64 tokens and share one token).
/usr/bin/python3 - "$WORK" <<'PY'
import numpy as np, sys
rng = np.random.default_rng(7)
hdr = np.zeros(256, dtype="<i4"); hdr[:3] = (20240520, 1, 4 * 64 + 1)
with open(f"{sys.argv[1]}/val_000000.bin", "wb") as f:
    f.write(hdr.tobytes()); f.write(rng.integers(0, 1024, 4 * 64 + 1).astype("<u2").tobytes())
PY
# The vanilla model, and the router-less middle_sequence model whose export is read as a plain
# 8-layer Llama: the unrolled names must put every shared layer at its depth for the CE to agree.
mine=$("$MOR_BIN" eval --config "$MOR_SRC/configs/tiny_vanilla.ini" --train.init_params "$WORK/ck_vanilla" \
  --data.val "$WORK/val_000000.bin" --train.threads 1 | sed -nE 's/^val_loss ([0-9.]+) over 4 windows.*/\1/p')
rec=$("$MOR_BIN" eval --config "$MOR_SRC/configs/tiny_mor.ini" --mor.router none --mor.sharing middle_sequence \
  --train.init_params "$WORK/ck_rec_mseq" --data.val "$WORK/val_000000.bin" --train.threads 1 |
  sed -nE 's/^val_loss ([0-9.]+) over 4 windows.*/\1/p')
[ -n "$mine" ] && [ -n "$rec" ] || fail "mor-dist eval printed no val_loss over 4 windows"
/usr/bin/python3 - "$WORK" "$MOR_SRC" "$mine" "$rec" <<'PY'
import json, struct, sys
import numpy as np, torch
work, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, src + "/tests/reference")
import mor_ref
tok = np.fromfile(f"{work}/val_000000.bin", dtype="<u2", offset=1024).astype(np.int64)
windows = torch.tensor(np.stack([tok[j * 64:j * 64 + 65] for j in range(4)]))
cfg = mor_ref.load_config(src + "/configs/tiny_vanilla.ini")
ok = True
for name, mine in (("vanilla", float(sys.argv[3])), ("rec_mseq", float(sys.argv[4]))):
    raw = open(f"{work}/hf_{name}/model.safetensors", "rb").read()
    (n,) = struct.unpack("<Q", raw[:8]); header = json.loads(raw[8:8 + n]); header.pop("__metadata__")
    W = {k: torch.tensor(np.frombuffer(raw[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]], dtype="<f4")
                         .reshape(t["shape"]), dtype=torch.float64) for k, t in header.items() if k != "lm_head.weight"}
    ref = float(mor_ref.forward(cfg, W, windows)["loss.ce"])
    rel = abs(mine - ref) / ref
    print(f"{name}: cross-entropy of 4 windows: mor-dist eval (checkpoint) {mine:.6f}, "
          f"reference as a plain Llama (exported weights) {ref:.6f}, rel {rel:.1e}")
    ok = ok and rel <= 1e-5
sys.exit(0 if ok else 1)
PY

expect_exit2() {  # expect_exit2 WHAT ARGS...: exit status 2, an error line, nothing written
  local rc=0
  "$MOR_BIN" export "${@:2}" > "$WORK/err.log" 2>&1 || rc=$?
  [ $rc -eq 2 ] || fail "$1: exit status $rc, want 2 ($(cat "$WORK/err.log"))"
  grep -q "error" "$WORK/err.log" || fail "$1: no error message"
  echo "refused ($1): $(tail -1 "$WORK/err.log")"
}
expect_exit2 "existing --out" --ckpt "$WORK/ck_vanilla" --out "$WORK/hf_vanilla"
expect_exit2 "bad size" --ckpt "$WORK/ck_vanilla" --out "$WORK/x" --max-shard-size 5XB
expect_exit2 "no --ckpt" --out "$WORK/x"
[ ! -e "$WORK/x" ] && [ ! -e "$WORK/x.tmp" ] || fail "a refused export left files behind"
