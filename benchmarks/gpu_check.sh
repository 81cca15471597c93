#!/usr/bin/env bash
# The GPU check of bcikit, prepared to run in one go on a borrowed CUDA machine.
#
#   bash benchmarks/gpu_check.sh quick OUTDIR   CUDA tests + MVCNet epoch timings per preset +
#                                               a one-epoch smoke run of every comparison pipeline
#   bash benchmarks/gpu_check.sh full OUTDIR    the MVCNet comparisons of benchmarks/README.md:
#                                               simulator (9 subjects x 5 seeds, CO) and the real
#                                               PhysioNet S001 recordings (fists/feet, left/right)
#   bash benchmarks/gpu_check.sh sim OUTDIR     the simulator comparison alone; SIM_SET adds
#                                               overrides (default: mi_co.toml, 0.575, oracle
#                                               ~0.85; e.g. SIM_SET="data.simulate.difficulty=0.7")
#                                               and SIM_OTHERS the pipelines beside MVCNet
#   bash benchmarks/gpu_check.sh core OUTDIR    what issues 3 and 6 still need, in one call bounded
#                                               by DEADLINE (s, default 540): the CUDA tests, the
#                                               MVCNet epoch timings (alone on the GPU), the
#                                               simulator comparison (as `sim`), then the encoding
#                                               ridge GPU benchmark (ENC_BENCH_ARGS, ENC_S seconds)
#   bash benchmarks/gpu_check.sh all OUTDIR     issues 3, 4 and 5 at once, bounded by DEADLINE
#                                               (s, default 530): the MVCNet simulator comparison
#                                               (as `sim`), the four FLEEG arms (as `fleeg`),
#                                               the CUDA tests, and the Du-IN simulator
#                                               experiment niced (DUIN_ARGS, its own --deadline);
#                                               the MVCNet epoch timings only on an H100 (the
#                                               H200's are measured)
#   bash benchmarks/gpu_check.sh fleeg OUTDIR   the four FLEEG arms alone (9 sites, full size,
#                                               250 rounds), bounded by DEADLINE (s, default 530),
#                                               then their two comparisons; everything in
#                                               OUTDIR/all.tgz
#   bash benchmarks/gpu_check.sh fleeg-duin OUTDIR
#                                               CUDA tests; the FLEEG 9-site check at full size
#                                               (federated and local-only arms of the positive and
#                                               the negative control as four processes, 250
#                                               rounds); the Du-IN simulator experiment
#                                               (benchmarks/duin_simulator.py, DUIN_ARGS); then
#                                               the Du-IN and encoding-ridge GPU benchmarks.
#                                               DEADLINE (s, default 540) bounds the whole call:
#                                               what is unfinished by then is stopped, and what
#                                               finished is kept.
#   bash benchmarks/gpu_check.sh duin OUTDIR    the Du-IN simulator experiment alone
#                                               (benchmarks/duin_simulator.py, DUIN_ARGS; default:
#                                               6 jobs, 2 seeds, 40 classifier epochs, the
#                                               word-locked potential calibrated at snr 2,
#                                               codebook restarts), its
#                                               --deadline from DEADLINE (s, default 540)
#
# Everything it writes goes to OUTDIR: logs, benchmark JSON, and the comparison folders as
# tarballs (the run folders without checkpoints). On a machine where bcikit is installed with
# `pip install -e ".[dev]"` nothing else is needed. Where the Python environment lacks bcikit's
# dependencies (a bare image with torch only), put their wheels in .whl/ (see
# benchmarks/README.md, "GPU check"); they are installed into /tmp/site first. The S001 files
# come from $BCIKIT_REALDATA, or from .gpudata/s001.tgz when that variable is unset.
set -u
mode=${1:?usage: gpu_check.sh quick|full|sim|core|fleeg|fleeg-duin|duin|all OUTDIR}
out=${2:?usage: gpu_check.sh quick|full|sim|core|fleeg|fleeg-duin|duin|all OUTDIR}
mkdir -p "$out"
work=${WORK:-/tmp/bcikit-gpu}
if [ "$mode" = all ] || [ "$mode" = fleeg ]; then
  # At most 8 files come back from a lent GPU: everything is staged and tarred into
  # OUTDIR/all.tgz, every 45 s (so a call stopped from outside still returns what finished)
  # and once at the end.
  final=$out; out=/tmp/gpu_stage; rm -rf "$out"; mkdir -p "$out"
  snapshot() {
    tar czf "$final/all.tmp" --exclude=checkpoints -C / "${out#/}" "${work#/}" 2>/dev/null \
      && mv "$final/all.tmp" "$final/all.tgz"
  }
  ( while sleep 45; do snapshot; done ) & snapper=$!
fi
export PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0 MPLBACKEND=Agg
PY=${PYTHON:-python3}
if [ -d .whl ] && ! $PY -c "import braindecode, mne, pyriemann" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >"$out/pip.log" 2>&1 || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
if [ -z "${BCIKIT_REALDATA:-}" ] && [ -f .gpudata/s001.tgz ]; then
  mkdir -p /tmp/realdata && tar xzf .gpudata/s001.tgz -C /tmp/realdata
  export BCIKIT_REALDATA=/tmp/realdata
fi
rm -rf "$work"; mkdir -p "$work"
BCIKIT="$PY -m bcikit.cli"
SIM=(mvcnet mvcnet_stem mi_eegnet mi_csp_lda mi_ts_lr)
S001=(mvcnet mi_eegnet mi_csp_lda)
# each process gets a few CPU threads (16 cores, up to 10 processes at once)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
$PY - <<'EOF' 2>&1 | tee "$out/env.txt"
import torch, braindecode, mne, sklearn, numpy, bcikit
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("braindecode", braindecode.__version__, "mne", mne.__version__, "sklearn",
      sklearn.__version__, "numpy", numpy.__version__, "bcikit", bcikit.__version__)
EOF

# s001 TASK A B NAME EXTRA...: one S001 run through the dataset card
s001() {
  local task=$1 a=$2 b=$3 p=$4; shift 4
  $BCIKIT run "pipelines/$p.toml" --dataset datasets/realdata_eegmmidb_S001.toml \
    --set "data.task=$task" --set "data.classes=['$a','$b']" --set output.checkpoint=false \
    --device cuda --no-progress --out "$work/s001-$task/$p" "$@" \
    >"$work/s001-$task-$p.log" 2>&1 || echo "FAILED: s001 $task $p (see its log)"
}

wait_until() {  # wait_until T: wait for the processes in pids until $SECONDS reaches T,
                # then stop them
  while [ $SECONDS -lt "$1" ]; do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 5
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && echo "stopped at the deadline: pid $p"; done
}

fleeg_start() {  # fleeg_start JOBS: the four FLEEG arms in the background
  # (federated / local-only, each on the positive sites and on the negative control)
  local fl=(--size "${FL_SIZE:-full}" --rounds "${FL_ROUNDS:-250}" --n-test 0.25 --jobs "$1"
            --device "${DEVICE:-cuda}" --verbose)
  for arm in federated local; do
    OMP_NUM_THREADS=1 $PY -m bcikit.federated.simulate "${fl[@]}" --kind $arm \
      --out "$out/fleeg_$arm.json" >"$out/fleeg_$arm.log" 2>&1 & pids+=($!)
    OMP_NUM_THREADS=1 $PY -m bcikit.federated.simulate "${fl[@]}" --kind $arm --negative-control \
      --out "$out/fleeg_negative_$arm.json" >"$out/fleeg_negative_$arm.log" 2>&1 & pids+=($!)
  done
}

fleeg_combine() {  # each control's two finished arms joined into its comparison
  for neg in "" "--negative-control"; do
    tag=fleeg${neg:+_negative}
    [ -f "$out/${tag}_federated.json" ] && [ -f "$out/${tag}_local.json" ] && \
      $PY -m bcikit.federated.simulate --size "${FL_SIZE:-full}" $neg \
        --combine "$out/${tag}_federated.json" "$out/${tag}_local.json" --out "$out/$tag.json" \
        2>&1 | tail -12 | tee "$out/$tag.txt"
  done
}

pack() {  # pack NAME DIR: the comparison folders without checkpoints, logs included
  tar czf "$out/$1.tgz" --exclude=checkpoints -C "$(dirname "$2")" "$(basename "$2")" \
    $(cd "$(dirname "$2")" && ls -d "$(basename "$2")"-*.log 2>/dev/null)
}

if [ "$mode" = fleeg ]; then
  # session 7 (beside the MVCNet comparison and Du-IN on one H200): 55 s of simulation, about
  # 55 s of preparation, 3 min for the first round (cuDNN autotuning of every site's shapes under
  # that load), then 1.5-2.6 s per round; alone the four arms should finish in about 6 min
  t0=$SECONDS; deadline=${DEADLINE:-530}
  pids=()
  fleeg_start 4
  wait_until $((t0 + deadline))
  fleeg_combine
  for f in "$out"/fleeg*.log; do tr '\r' '\n' <"$f" | tail -n 2; done
  echo "gpu_check fleeg: $((SECONDS - t0)) s"
  kill $snapper 2>/dev/null; snapshot
  exit 0
fi

if [ "$mode" = duin ]; then
  t0=$SECONDS; deadline=${DEADLINE:-540}
  # 2 seeds: with 40 classifier epochs, 3 seeds need about 580 s of tasks (duin_simulator.py's
  # estimate, scaled), more than the deadline
  # --restart-dead-codes 10: bcikit's opt-in (not the spec); without it the codebook collapsed
  # to one code in every CPU pre-training of session 12 (benchmarks/README.md, Du-IN)
  duin=(--jobs 6 --threads 2 --snr 2 --lfp-snr-grid 8 16 32 64 128 --epochs-classifier 40
        --seeds 42 0 --restart-dead-codes 10)
  $PY benchmarks/duin_simulator.py ${DUIN_ARGS:-${duin[@]}} --device "${DEVICE:-cuda}" \
    --deadline $((deadline - 15)) --work "$work/duin" --out "$out/duin_simulator.json" \
    >"$out/duin_simulator.log" 2>&1
  tail -n 30 "$out/duin_simulator.log"
  echo "gpu_check duin: $((SECONDS - t0)) s"
  exit 0
fi

if [ "$mode" = fleeg-duin ]; then
  t0=$SECONDS; deadline=${DEADLINE:-540}
  dev=${DEVICE:-cuda}   # DEVICE=cpu FL_SIZE=tiny FL_ROUNDS=1 ENC_DURATION=300 ...: a dry run
  pids=()
  fleeg_start 4
  if [ -f benchmarks/duin_simulator.py ]; then
    $PY benchmarks/duin_simulator.py ${DUIN_ARGS:---jobs 6} --device $dev \
      --out "$out/duin_simulator.json" >"$out/duin_simulator.log" 2>&1 & pids+=($!)
  fi
  # encoding rows 5-6 at the spec's size: a 60-min movie at the simulator's default snr
  # (0.27), ridge on CUDA
  $BCIKIT run pipelines/encoding.toml --device $dev --no-progress --out "$work/encoding60" \
    --set data.simulate.duration=${ENC_DURATION:-3600.0} --set data.simulate.snr=${ENC_SNR:-0.27} \
    >"$out/encoding60.log" 2>&1 & pids+=($!)
  $PY -m pytest -p no:cacheprovider tests/test_cuda.py -q -rs >"$out/cuda_tests.log" 2>&1
  tail -3 "$out/cuda_tests.log"
  # wait for the experiments, up to the deadline minus the benchmarks' share
  wait_until $((t0 + deadline - ${BENCH_S:-100}))
  fleeg_combine
  [ -f benchmarks/bench_duin.py ] && timeout 60 $PY benchmarks/bench_duin.py ${DUIN_BENCH_ARGS:-} \
    --device $dev --out "$out/duin_$dev.json" >"$out/bench_duin.log" 2>&1
  left=$((deadline - (SECONDS - t0) - 5))
  [ $left -gt 20 ] && timeout $left $PY benchmarks/bench_encoding.py --scale 0.25 --threads 4 \
    --sides bcikit_numpy,himalaya_ridgecv --boot-resamples 1 --oof-resamples 5 \
    --out "$out/encoding_gpu.json" >"$out/bench_encoding.log" 2>&1
  [ -d "$work/encoding60" ] && tar czf "$out/encoding60.tgz" -C "$work" encoding60
  tail -n 2 "$out"/*.log | head -80
  echo "gpu_check fleeg-duin: $((SECONDS - t0)) s"
  exit 0
fi

if [ "$mode" = quick ]; then
  $PY -m pytest -p no:cacheprovider tests/test_cuda.py -q -rs 2>&1 | tee "$out/cuda_tests.log"
  $PY benchmarks/bench_mvcnet_gpu.py --out "$out/mvcnet_gpu.json" --epochs 4 2>&1 \
    | tee "$out/bench_mvcnet_gpu.log"
  smoke=(--set train.epochs=1 --set evaluate.seeds=[1] --set data.simulate.n_subjects=2
         --set output.checkpoint=false)
  for p in "${SIM[@]}"; do
    $BCIKIT run "pipelines/$p.toml" --device cuda --no-progress --out "$work/smoke/$p" \
      "${smoke[@]}" >"$work/smoke-$p.log" 2>&1 || echo "FAILED: smoke $p"
  done
  s001 imagery_ff hands feet mvcnet --set train.epochs=1 --set evaluate.seeds=[1]
  grep -h "test \|Error\|error" "$work"/smoke-*.log "$work"/s001-*.log | tail -20
  tar czf "$out/smoke.tgz" --exclude=checkpoints -C "$work" .
  exit 0
fi

# simulator comparison (pipelines/shared/mi_co.toml), MVCNet split into one process per seed
sim="$work/sim"
mkdir -p "$sim"
extra=(--set output.checkpoint=false)
for kv in ${SIM_SET:-}; do extra+=(--set "$kv"); done
others=(${SIM_OTHERS:-mvcnet_stem mi_eegnet mi_csp_lda mi_ts_lr})
sdev=${DEVICE:-cuda}   # DEVICE=cpu SIM_SET="train.epochs=1 data.simulate.n_subjects=1": a dry run
sim_compare() {
  $BCIKIT compare "$sim/mvcnet-s1,$sim/mvcnet-s2,$sim/mvcnet-s3,$sim/mvcnet-s4,$sim/mvcnet-s5" \
    "${others[@]/#/$sim/}" --out "$sim/comparison" 2>&1 | tee "$out/sim_comparison.md"
}
if [ "$mode" = all ]; then
  t0=$SECONDS; deadline=${DEADLINE:-530}
  pids=()
  fleeg_start 2   # CPU-only for their first minute (simulation, filtering)
  if [ -f benchmarks/duin_simulator.py ]; then
    nice -n 10 $PY benchmarks/duin_simulator.py ${DUIN_ARGS:---jobs 3 --threads 1} \
      --device $sdev --deadline $((deadline - 40)) --out "$out/duin_simulator.json" \
      >"$out/duin_simulator.log" 2>&1 &
    pids+=($!)
  fi
fi
if [ "$mode" = core ]; then
  t0=$SECONDS; deadline=${DEADLINE:-540}
  $PY -m pytest -p no:cacheprovider tests/test_cuda.py -q -rs >"$out/cuda_tests.log" 2>&1
  tail -3 "$out/cuda_tests.log"
  timeout 120 $PY benchmarks/bench_mvcnet_gpu.py --out "$out/mvcnet_gpu.json" --epochs 4 \
    >"$out/bench_mvcnet_gpu.log" 2>&1
  tail -12 "$out/bench_mvcnet_gpu.log"
fi
[ "$mode" = all ] || pids=()
for s in 1 2 3 4 5; do
  $BCIKIT run pipelines/mvcnet.toml --device $sdev --no-progress --set "evaluate.seeds=[$s]" \
    "${extra[@]}" --out "$sim/mvcnet-s$s" >"$sim-mvcnet-s$s.log" 2>&1 &
  pids+=($!)
done
for p in "${others[@]}"; do
  $BCIKIT run "pipelines/$p.toml" --device $sdev --no-progress "${extra[@]}" \
    --out "$sim/$p" >"$sim-$p.log" 2>&1 &
  pids+=($!)
done
if [ "$mode" = all ]; then
  # the CUDA tests beside the experiments (their assertions do not depend on load)
  $PY -m pytest -p no:cacheprovider tests/test_cuda.py -q -rs >"$out/cuda_tests.log" 2>&1
  tail -3 "$out/cuda_tests.log"
  wait_until $((t0 + deadline - 25))
  sim_compare
  pack sim "$sim"
  fleeg_combine
  if nvidia-smi -L | grep -q H100; then
    timeout 60 $PY benchmarks/bench_mvcnet_gpu.py --out "$out/mvcnet_gpu_h100.json" --epochs 4 \
      >"$out/bench_mvcnet_gpu.log" 2>&1
  fi
  tail -n 3 "$out"/*.log "$sim"-*.log | head -120
  tail -n 12 "$out/duin_simulator.log"
  echo "gpu_check all: $((SECONDS - t0)) s"
  kill $snapper 2>/dev/null; snapshot
  exit 0
fi
if [ "$mode" = sim ]; then
  wait "${pids[@]}"
  sim_compare
  pack sim "$sim"
  exit 0
fi
if [ "$mode" = core ]; then
  # the comparison first; the ridge benchmark alone afterwards (ENC_S seconds kept for it)
  wait_until $((t0 + deadline - ${ENC_S:-150}))
  sim_compare
  pack sim "$sim"
  left=$((deadline - (SECONDS - t0) - 10))
  [ $left -gt 20 ] && timeout $left $PY benchmarks/bench_encoding.py \
    ${ENC_BENCH_ARGS:---scale 0.25 --threads 4 --sides bcikit_numpy,himalaya_ridgecv \
      --boot-resamples 1 --oof-resamples 5} \
    --out "$out/encoding_gpu.json" >"$out/bench_encoding.log" 2>&1
  tail -n 3 "$out"/*.log "$sim"-*.log | head -80
  echo "gpu_check core: $((SECONDS - t0)) s"
  exit 0
fi
# real S001: two tasks x three pipelines, five seeds each (the card's 45 trials per task)
for t in "imagery_ff hands feet" "imagery_lr left_hand right_hand"; do
  set -- $t
  for p in "${S001[@]}"; do s001 "$1" "$2" "$3" "$p" & pids+=($!); done
done
wait "${pids[@]}"
sim_compare
for t in imagery_ff imagery_lr; do
  $BCIKIT compare "$work/s001-$t/mvcnet" "$work/s001-$t/mi_eegnet" "$work/s001-$t/mi_csp_lda" \
    --out "$work/s001-$t/comparison" 2>&1 | tee "$out/s001_$t.md"
done
pack sim "$sim"
tar czf "$out/s001.tgz" --exclude=checkpoints -C "$work" $(cd "$work" && ls -d s001-*)
