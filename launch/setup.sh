#!/usr/bin/env bash
# One-time set-up of hvdkit on a Debian machine, as root: OpenMPI, .venv (Python 3.11), torch,
# TensorFlow, mpi4py, Horovod 0.28.1 built from its sdist with launch/horovod-0.28.1.patch, and
# hvdkit itself. Idempotent: a second run on the same machine checks and returns in seconds.
#
#   bash launch/setup.sh          (or: make setup)
#
# The Horovod wheel is cached in ~/.cache/hvdkit/wheels/<key>/, keyed by the Horovod, torch and
# TF versions, the patch's hash and CPU/GPU, so a machine builds it once.
# With CUDA (nvcc and a visible GPU) it installs the GPU builds and builds Horovod with NCCL.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
HOROVOD_VERSION=0.28.1
TORCH_VERSION=2.13.0
TF_SPEC="tensorflow-cpu==2.21.*"
PATCH="$ROOT/launch/horovod-$HOROVOD_VERSION.patch"
CACHE="${HVDKIT_CACHE:-$HOME/.cache/hvdkit}"

STEP="start"
step() { STEP="$1"; echo "[setup] $1"; }
on_error() {
  echo "[setup] FAILED during: $STEP" >&2
  echo "[setup] the output above says why; fix it and run 'make setup' again" >&2
}
trap on_error ERR

# -- 1. system packages -----------------------------------------------------------------------
need_apt=()
command -v mpirun >/dev/null && command -v mpicxx >/dev/null || need_apt+=(libopenmpi-dev openmpi-bin)
command -v g++ >/dev/null || need_apt+=(g++)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v make >/dev/null || need_apt+=(make)
python3.11 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3.11-venv)
# The multi-host test (tests/integration/test_multihost.py) runs an sshd inside network
# namespaces made with `ip`; it starts and stops its own sshd, on its own addresses only.
# Namespaces need root, so without root the test skips and these are not needed.
if [ "$(id -u)" = 0 ]; then
  [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ip >/dev/null || need_apt+=(iproute2)
fi
if ((${#need_apt[@]})); then
  step "installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "[setup] run as root, or install these first: ${need_apt[*]}" >&2; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
else
  step "system packages present (OpenMPI: $(mpirun --version 2>/dev/null | head -n1))"
fi

# -- 2. GPU or CPU ----------------------------------------------------------------------------
GPU=0
if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
  step "CUDA found: GPU builds of the frameworks, Horovod with NCCL"
  TF_SPEC="tensorflow[and-cuda]==2.21.*"
fi

# -- 3. virtual environment and Python packages ----------------------------------------------
if [ ! -x "$PY" ]; then
  step "creating $VENV (Python 3.11)"
  python3.11 -m venv "$VENV"
fi
DEPS=("torch==$TORCH_VERSION" "$TF_SPEC" "mpi4py>=4,<5" numpy scikit-learn tqdm PyYAML pytest
      ruff matplotlib psutil cloudpickle cffi "setuptools>=68" wheel packaging tensorboard
      pillow simplejpeg)
DEPS_KEY=$(printf '%s\n' "${DEPS[@]}" "gpu=$GPU" | sha256sum | cut -c1-16)
if [ ! -f "$VENV/.deps-$DEPS_KEY" ]; then
  step "installing Python packages (torch $TORCH_VERSION, $TF_SPEC, mpi4py, ...)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "${DEPS[@]}"
  rm -f "$VENV"/.deps-*
  touch "$VENV/.deps-$DEPS_KEY"
else
  step "Python packages present"
fi

# -- 4. Horovod, built once per machine and cached -------------------------------------------
step "finding the Horovod build for this machine"
versions=$("$PY" - <<'PYTHON'
import importlib.metadata as m

def version(*names):
    for name in names:
        try:
            return m.version(name)
        except m.PackageNotFoundError:
            pass
    raise SystemExit(f"none of {names} is installed")

print(version("torch"), version("tensorflow-cpu", "tensorflow"))
PYTHON
)
KEY=$(printf 'horovod=%s torch/tf=%s gpu=%s patch=%s' "$HOROVOD_VERSION" "$versions" "$GPU" \
      "$(sha256sum "$PATCH" | cut -c1-16)" | sha256sum | cut -c1-16)
WHEEL_DIR="$CACHE/wheels/$KEY"
if [ -f "$VENV/.horovod-$KEY" ]; then
  step "Horovod $HOROVOD_VERSION present (build $KEY)"
else
  if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
    step "building Horovod $HOROVOD_VERSION from its sdist with $(basename "$PATCH") (a few minutes)"
    work=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
    tar xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
    (cd "$work/horovod-$HOROVOD_VERSION" && patch -p1 --quiet < "$PATCH")
    export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 \
           HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
           CMAKE_POLICY_VERSION_MINIMUM=3.5  # gloo asks for an old CMake; CMake 4 needs this
    if [ "$GPU" = 1 ]; then
      export HOROVOD_GPU_OPERATIONS=NCCL
      # CUDA kernels for this host's GPUs only (else every architecture nvcc knows).
      caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d . | sort -u | paste -sd, -)
      export HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST:-$caps}"
      # PyPI's CUDA torch brings NCCL as a wheel (nvidia-nccl-cu*) without a libnccl.so link.
      if [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_LIB:-}" ] && ! ldconfig -p | grep -q 'libnccl\.so '; then
        nccl=$("$PY" -c "import nvidia.nccl as n; print(list(n.__path__)[0])" 2>/dev/null || true)
        if [ -n "$nccl" ]; then
          mkdir -p "$work/nccl" && ln -sf "$nccl/lib/libnccl.so.2" "$work/nccl/libnccl.so"
          export HOROVOD_NCCL_INCLUDE="$nccl/include" HOROVOD_NCCL_LIB="$work/nccl" \
                 HOROVOD_NCCL_LINK=SHARED
        fi
      fi
    fi
    # GCC 13 and newer no longer pull <string>, <stdexcept>, ... in through other headers, and
    # Horovod 0.28.1's sources relied on that.
    if [ "$(g++ -dumpversion | cut -d. -f1)" -ge 13 ]; then
      for header in cstdint string stdexcept limits memory algorithm functional mutex; do
        CXXFLAGS="${CXXFLAGS:-} -include $header"
      done
      export CXXFLAGS
    fi
    mkdir -p "$WHEEL_DIR"
    "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$work/wheel" \
      "$work/horovod-$HOROVOD_VERSION" > "$work/build.log" 2>&1 \
      || { tail -n 40 "$work/build.log"; echo "[setup] full log: $work/build.log" >&2; false; }
    mv "$work"/wheel/horovod-*.whl "$WHEEL_DIR"/
    rm -rf "$work"
  else
    step "installing cached Horovod wheel from $WHEEL_DIR"
  fi
  "$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL_DIR"/horovod-*.whl
  rm -f "$VENV"/.horovod-*
  touch "$VENV/.horovod-$KEY"
fi

# -- 5. check Horovod's build -----------------------------------------------------------------
if [ ! -f "$VENV/.horovod-checked-$KEY" ]; then
  step "checking Horovod's build (horovodrun --check-build)"
  report=$(TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build 2>/dev/null)
  expected=("TensorFlow" "PyTorch" "MPI" "Gloo")
  if [ "$GPU" = 1 ]; then expected+=("NCCL"); fi
  missing=()
  for item in "${expected[@]}"; do
    grep -q "\[X\] $item" <<<"$report" || missing+=("$item")
  done
  if ((${#missing[@]})); then
    echo "$report"
    echo "[setup] Horovod was built without: ${missing[*]}" >&2
    echo "[setup] remove $WHEEL_DIR and $VENV/.horovod-$KEY, then run 'make setup'" >&2
    exit 1
  fi
  touch "$VENV/.horovod-checked-$KEY"
else
  step "Horovod's build was checked: TensorFlow, PyTorch, MPI, Gloo"
fi

# -- 6. hvdkit itself -------------------------------------------------------------------------
if ! "$PY" -m pip show -q hvdkit >/dev/null 2>&1; then
  step "installing hvdkit (editable)"
  "$PY" -m pip install -q --no-build-isolation --no-deps -e "$ROOT"
fi
"$VENV/bin/hvdkit" --version >/dev/null

# -- 7. hvdkit on PATH ------------------------------------------------------------------------
# A link to .venv/bin/hvdkit in /usr/local/bin or ~/.local/bin (launch/link.sh says which, and
# leaves a link to another checkout's hvdkit alone; HVDKIT_LINK=force re-points it).
STEP="linking hvdkit on PATH"
bash "$ROOT/launch/link.sh" "$VENV/bin/hvdkit"
