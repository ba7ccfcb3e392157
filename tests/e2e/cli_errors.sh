#!/usr/bin/env bash
# Bad options and configs exit with status 2 and a message naming the option.
source "$(dirname "$0")/common.sh"
expect_error() {  # expect_error "text in message" args...
  local want=$1; shift
  set +e
  out=$("$MOR_BIN" "$@" 2>&1); rc=$?
  set -e
  [ "$rc" -eq 2 ] || fail "exit $rc (want 2) for: $* -> $out"
  grep -qF -- "$want" <<<"$out" || fail "message lacks '$want' for: $* -> $out"
  echo "ok: $* -> $out"
}
cfg="$MOR_SRC/configs/tiny_mor.ini"
expect_error "unrecognised option '--model.widht'" train --config "$cfg" --model.widht 3
expect_error "--model.n_heads: 5 does not divide model.d_model = 128" train --config "$cfg" --model.n_heads 5
expect_error "--mor.capacity: has 2 values but mor.n_recursions = 3" train --config "$cfg" --mor.capacity 1,0.5
expect_error "nearest valid layer counts are 8 and 11" train --config "$cfg" --model.n_layers 9
expect_error "--mor.router: unknown value 'expert_choice'" train --config "$cfg" --mor.router expert_choice
expect_error "--train.micro_batch: global_batch 16 is not divisible" train --config "$cfg" --train.micro_batch 5
expect_error "--optim.schedule: unknown value 'linear'" train --config "$cfg" --optim.schedule linear
expect_error "--train.gemm: unknown value 'mkl'" train --config "$cfg" --train.gemm mkl
expect_error "--train.device: unknown value 'tpu'" train --config "$cfg" --train.device tpu
expect_error "--train.attention_kernel: unknown value 'fast'" train --config "$cfg" --train.attention_kernel fast
# On the CPU the attention kernel choice is accepted and ignored, with one log line saying so.
out=$("$MOR_BIN" train --config "$cfg" --train.steps 1 --train.attention_kernel flash \
  --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" 2>&1) || fail "flash on the CPU: $out"
grep -qx "train.attention_kernel flash: ignored on --train.device cpu (the CPU backend has one attention kernel)" \
  <<<"$out" || fail "no 'ignored' line for --train.attention_kernel flash on the CPU: $out"
echo "ok: --train.attention_kernel flash on the CPU is ignored with a log line"
# cuda in a build without the CUDA backend: a ConfigError naming the option, for train and eval.
if [ "${MOR_CUDA_BUILT:-OFF}" != ON ]; then
  expect_error "--train.device: cuda needs a mor-dist built with the CUDA backend (cmake -DMOR_CUDA=ON)" \
    train --config "$cfg" --train.device cuda --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val ""
  expect_error "--train.device: cuda needs a mor-dist built with the CUDA backend" \
    eval --config "$cfg" --train.device cuda --train.init_params "$cfg" --data.val "$MOR_DATA/edu_fineweb_val_*.bin"
fi
expect_error "model.d_model" train --config "$cfg" --model.d_model abc
expect_error "cannot open config file '$WORK/none.ini'" train --config "$WORK/none.ini"
expect_error "unknown command 'trian'" trian
printf '[model]\nd_model = 64\nbogus_key = 1\n' > "$WORK/bad.ini"
expect_error "bogus_key" train --config "$WORK/bad.ini"
# A shard that is not a token shard: a runtime error (status 1) naming the file.
echo "not a shard" > "$WORK/edu_fineweb_train_000001.bin"
set +e
out=$("$MOR_BIN" train --config "$cfg" --data.train "$WORK/edu_fineweb_train_*.bin" --data.val "" 2>&1); rc=$?
set -e
[ "$rc" -eq 1 ] || fail "bad shard: exit $rc"
grep -qF "$WORK/edu_fineweb_train_000001.bin" <<<"$out" || fail "bad shard message lacks the file: $out"
help=$("$MOR_BIN" train --help)
grep -q -- "--mor.kv_mode" <<<"$help" || fail "--help does not document mor.kv_mode"

# Exact option names: a prefix is not guessed; the message suggests the nearest name(s).
expect_error "unrecognised option '--train.step'; did you mean --train.steps?" train --config "$cfg" --train.step 10
expect_error "unrecognised option '--train.step=10'; did you mean --train.steps?" train --config "$cfg" --train.step=10
expect_error "unrecognised option '--train.lr'; did you mean --optim.lr?" train --config "$cfg" --train.lr 1e-3
expect_error "unrecognised option '--steps'; did you mean --train.steps?" train --config "$cfg" --steps 3
expect_error "unrecognised option '--mor.rooter'; did you mean --mor.router?" train --config "$cfg" --mor.rooter token
expect_error "unrecognised option '--save-evry'; did you mean --save-every?" train --config "$cfg" --save-evry 5
expect_error "unrecognised option '--conf'; did you mean --config?" train --conf "$cfg"
expect_error "unrecognised option '--tokenizr'; did you mean --tokenizer?" prepare --tokenizr x
expect_error "unrecognised option '--shard-token'; did you mean --shard-tokens?" prepare --shard-token 5
printf '[model]\nd_modle = 64\n' > "$WORK/typo.ini"
expect_error "config file '$WORK/typo.ini': unrecognised option 'model.d_modle'; did you mean 'd_model' (in [model])?" \
  train --config "$WORK/typo.ini"
# Boost's messages name the option themselves: no "--option: " prefix in front of them.
set +e; out=$("$MOR_BIN" train --config "$cfg" --train.step 10 2>&1); set -e
grep -qE 'error: --[a-z_.-]*: ' <<<"$out" && fail "option-name prefix in: $out"
echo "ok: no prefix: $out"

# --config naming a directory; a 10 MB INI line is cut in the message.
expect_error "--config: '$WORK' is a directory, not a config file" train --config "$WORK"
/usr/bin/python3 -c 'import sys; sys.stdout.write("[model]\nd_model = " + "7x" * 5000000 + "\n")' > "$WORK/long.ini"
/usr/bin/python3 -c 'import sys; sys.stdout.write("[mor]\nrouter = " + "y" * 10000000 + "\n")' > "$WORK/long2.ini"
/usr/bin/python3 -c 'import sys; sys.stdout.write("z" * 10000000 + "\n")' > "$WORK/long3.ini"
for f in long long2 long3; do
  set +e; out=$("$MOR_BIN" train --config "$WORK/$f.ini" --data.train x 2>&1); rc=$?; set -e
  [ "$rc" -eq 2 ] || fail "$f.ini: exit $rc (want 2)"
  [ "${#out}" -lt 400 ] || fail "$f.ini: a ${#out}-byte message"
  grep -qF "... (10000000 bytes)" <<<"$out" || fail "$f.ini: the cut value does not say its size: $out"
  echo "ok: $f.ini -> $out"
done

# --help prints defaults as a config file writes them; eval --help only what eval reads.
for want in "--optim.lr arg (=3e-3)" "--model.rms_eps arg (=1e-5)" "--data.shuffle arg (=true)" \
            "--dist.keep_shared_gathered arg (=false)" "--model.init_std arg (=0.02)" "--train.steps arg (=1000)"; do
  grep -qF -- "$want" <<<"$help" || fail "train --help lacks '$want'"
done
grep -qE -- '--data.shuffle arg \(=1\)|0\.0030000|0000000000[1-9]' <<<"$help" && fail "train --help prints raw doubles or 1 for true"
ehelp=$("$MOR_BIN" eval --help)
for want in --model.d_model --mor.router --train.init_params --data.val --train.eval_samples --train.micro_batch --config; do
  grep -qF -- "$want " <<<"$ehelp" || fail "eval --help lacks $want"
done
for unused in --train.steps --optim.lr --data.train --ckpt.dir --dist.overlap --train.metrics --save-every; do
  grep -qF -- "$unused " <<<"$ehelp" && fail "eval --help lists $unused, which eval does not use"
done
echo "ok: eval --help lists $(grep -c -- '^  -' <<<"$ehelp") options"
expect_error "--train.steps is not used by eval" eval --config "$cfg" --train.steps 5

# --version: version, git revision (a commit of this repository, or "unknown"), build flags.
ver=$("$MOR_BIN" --version)
echo "$ver"
grep -qE '^mor-dist [0-9]+\.[0-9]+\.[0-9]+$' <<<"$ver" || fail "--version: no version line"
rev=$(sed -n 's/^git revision: //p' <<<"$ver")
[[ "$rev" =~ ^([0-9a-f]{12})(-dirty)?$ || "$rev" == unknown ]] || fail "--version: git revision '$rev'"
if [ "$rev" != unknown ] && git -C "$MOR_SRC" rev-parse --git-dir > /dev/null 2>&1; then
  git -C "$MOR_SRC" cat-file -e "${rev%-dirty}^{commit}" || fail "--version: $rev is not a commit of $MOR_SRC"
fi
for want in "build type: " "compiler: " "flags: " "BLAS: OpenBLAS"; do
  grep -q "^$want" <<<"$ver" || fail "--version lacks '$want'"
done
echo "cli_errors: all checks passed"
