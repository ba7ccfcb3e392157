#!/usr/bin/env bash
# `mor-dist export`: a checkpoint (written on 2 ranks, so from two shard files) in the Hugging Face
# layout, read back by an independent safetensors reader written here (json + numpy, no torch or
# safetensors package) and compared bit for bit with the checkpoint as h5py reads it:
#   - vanilla (N_r = 1): exactly the LlamaForCausalLM tensor names of an 8-layer Llama (tied head:
#     no lm_head.weight), a config.json whose fields are the model's;
#   - split at --max-shard-size 1MB: several model-0000K-of-0000N files + the index JSON, whose
#     weight_map names every tensor once and whose total_size is the sum of the tensors;
#   - MoR (tiny_mor.ini): the shared block once, the routers, the "mor" object in config.json;
#   - logits: the PyTorch reference (tests/reference/mor_ref.py, float64) with the exported vanilla
#     weights gives the cross-entropy `mor-dist eval` computes from the checkpoint, within 1e-5 relative,
#     on 4 windows of a token shard written here;
#   - refusals: an existing --out, a bad size, no --ckpt (exit 2, nothing written).
source "$(dirname "$0")/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
for m in vanilla mor; do
  mpirun --oversubscribe --bind-to none -np 2 "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_$m.ini" \
    --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.steps 3 --train.peak_gflops 100 \
    --train.threads 1 --ckpt.dir "$WORK/ck_$m" > /dev/null
done
"$MOR_BIN" export --ckpt "$WORK/ck_vanilla" --out "$WORK/hf_vanilla" | tee "$WORK/export.log"
"$MOR_BIN" export --ckpt "$WORK/ck_vanilla" --out "$WORK/hf_split" --max-shard-size 1MB > /dev/null
"$MOR_BIN" export --ckpt "$WORK/ck_mor" --out "$WORK/hf_mor" > /dev/null
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

mor = read_safetensors(f"{work}/hf_mor/model.safetensors")
same(mor, checkpoint(f"{work}/ck_mor"), "MoR")
assert "model.shared_layers.0.self_attn.q_proj.weight" in mor and "model.routers.0.weight" in mor
mcfg = json.load(open(f"{work}/hf_mor/config.json"))
assert mcfg["architectures"] == ["MoRLlamaForCausalLM"] and mcfg["mor"]["num_recursions"] == 3, mcfg
print("MoR: shared block once, routers, config.json 'mor':", json.dumps(mcfg["mor"]))
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
mine=$("$MOR_BIN" eval --config "$MOR_SRC/configs/tiny_vanilla.ini" --train.init_params "$WORK/ck_vanilla" \
  --data.val "$WORK/val_000000.bin" --train.threads 1 | sed -nE 's/^val_loss ([0-9.]+) over 4 windows.*/\1/p')
[ -n "$mine" ] || fail "mor-dist eval printed no val_loss over 4 windows"
/usr/bin/python3 - "$WORK" "$MOR_SRC" "$mine" <<'PY'
import json, struct, sys
import numpy as np, torch
work, src, mine = sys.argv[1], sys.argv[2], float(sys.argv[3])
sys.path.insert(0, src + "/tests/reference")
import mor_ref
raw = open(f"{work}/hf_vanilla/model.safetensors", "rb").read()
(n,) = struct.unpack("<Q", raw[:8]); header = json.loads(raw[8:8 + n]); header.pop("__metadata__")
W = {k: torch.tensor(np.frombuffer(raw[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]], dtype="<f4")
                     .reshape(t["shape"]), dtype=torch.float64) for k, t in header.items()}
tok = np.fromfile(f"{work}/val_000000.bin", dtype="<u2", offset=1024).astype(np.int64)
windows = torch.tensor(np.stack([tok[j * 64:j * 64 + 65] for j in range(4)]))
ref = float(mor_ref.forward(mor_ref.load_config(src + "/configs/tiny_vanilla.ini"), W, windows)["loss.ce"])
rel = abs(mine - ref) / ref
print(f"cross-entropy of 4 windows: mor-dist eval (checkpoint) {mine:.6f}, reference (exported weights) {ref:.6f}, rel {rel:.1e}")
sys.exit(0 if rel <= 1e-5 else 1)
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
