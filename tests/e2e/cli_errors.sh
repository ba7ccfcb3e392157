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
echo "cli_errors: all checks passed"
