"""Capacity planning on a real per-request log (issue 16, item 5): ``warmserve simulate`` with the log's own
models, their sizes guessed by name, every policy, and a sweep over cluster size.

The log is the Azure LLM inference trace 2023 (Splitwise): its code and conversation files, one hour each,
merged into one CSV with a model column (``azure-code-70b``, ``azure-conv-70b``: the paper served both with
Llama-2-70B, which the names make the simulator guess: 138 GB at fp16, tensor parallelism 4 on an H100).
The merged file is written to a temporary folder, never into the project. Prints the command's tables (per
policy, per model, and the fewest GPUs at >= 99 % SLO for 8, 16, 24 and 32 GPUs) and its wall time.

Usage: python bench/bench_capacity.py [--traces DIR] [--sweep-gpus 8,16,24,32] [--json OUT]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from warmserve.cli import main as warmserve

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure_llm_2023"
SERVICES = {
    "azure-code-70b": "AzureLLMInferenceTrace_code.csv",
    "azure-conv-70b": "AzureLLMInferenceTrace_conv.csv",
}


def merged_log(folder: Path, out: Path) -> Path:
    """The services' rows in one CSV (``TIMESTAMP,model,ContextTokens,GeneratedTokens``), by arrival."""
    frames = [pd.read_csv(folder / name).assign(model=model) for model, name in SERVICES.items()]
    log = pd.concat(frames).sort_values("TIMESTAMP", kind="stable")
    log[["TIMESTAMP", "model", "ContextTokens", "GeneratedTokens"]].to_csv(out, index=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=TRACES, help="the azure_llm_2023 folder")
    parser.add_argument("--sweep-gpus", default="8,16,24,32")
    parser.add_argument("--policies", default="warmserve,autoscale,muxserve,dedicated,oracle")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = merged_log(args.traces, Path(tmp) / "azure_2023.csv")
        argv = ["simulate", "--trace", str(log), "--policies", args.policies, "--sweep-gpus", args.sweep_gpus,
                "--no-progress", *(["--json", str(args.json)] if args.json else [])]  # fmt: skip
        print("warmserve " + " ".join(argv))
        start = time.perf_counter()
        code = warmserve(argv)
        print(f"wall time {time.perf_counter() - start:.0f} s, exit code {code}")


if __name__ == "__main__":
    main()
