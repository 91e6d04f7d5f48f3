"""Forecasting benchmark: backtest every forecaster on real traces and check the peak-loss floor.

Setting (issue 16, item 2): each trace is split train | validation | test (the first half of each model's
windows before the test span, the last third of them to validate; docs/forecasting.md, section 4), rolling
one window ahead. The figure is the **peak loss**: the pinball loss at q = 0.9 of the peak's calibrated upper
bound (the point forecast times a factor learned on the validation span), scaled like MASE, mean over
models. ``auto`` picks, per model, the forecaster with the lowest peak loss on the validation span only.

Datasets (each skipped, and said so, when its files are not found):

* ServeGen language, per model (3 models, 14 days at 600 s windows), with the per-model tables;
* ServeGen language, per client (each client a model, 600 s windows);
* Azure LLM inference 2023, code and conversation (one model each, an hour: 60 s windows).

Floors, printed per dataset: ``auto``'s overall peak loss is ≥ 15% below every baseline forecaster's; the
per-model ServeGen backtest (reading included) takes ≤ 60 s.

Run from the repository root: ``python bench/bench_forecast.py [--traces DIR]``, ``DIR`` holding
``servegen/data/language`` and ``azure_llm_2023`` (default: ``shared/traces`` beside the checkout). Without
the ServeGen folder the shipped sample (the same per-model series, derived) is used for the per-model run.
Exit code 1 if a floor check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from warmserve.operator.forecast.backtest import BacktestResult, backtest
from warmserve.operator.forecast.cli import format_table
from warmserve.operator.forecast.concurrency import load_series
from warmserve.operator.forecast.forecasters import BASELINES, FORECASTERS
from warmserve.operator.forecast.traces import ReaderOptions, Trace, read_trace

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "traces"
LANGUAGE = Path("servegen") / "data" / "language"
AZURE = Path("azure_llm_2023")
SAMPLE = REPO / "operator" / "warmserve" / "operator" / "data" / "servegen_language_600s.csv"
BUDGET_SEC = 60.0
MARGIN = 0.15  # auto's peak loss must be this much below every baseline's


def run(label: str, trace: Trace, window_sec: float, tables: bool) -> tuple[BacktestResult, float]:
    """Backtest every forecaster on ``trace``; print the tables (per model too when ``tables``)."""
    started = time.perf_counter()
    result = backtest(load_series(trace, window_sec), list(FORECASTERS), train_fraction=0.5)
    elapsed = time.perf_counter() - started
    print(f"== {label}: {len(result.models)} models, {window_sec:g} s windows ({elapsed:.1f} s)\n")
    if tables:
        print(format_table(result, window_sec))
    else:
        print(format_table(result, window_sec).split("\n\n")[-1])
        picks = sorted(result.chosen.values())
        print("auto chose: " + ", ".join(f"{n} {picks.count(n)}" for n in dict.fromkeys(picks)))
    return result, elapsed


def floor(label: str, result: BacktestResult) -> bool:
    """Print and return whether ``auto``'s overall peak loss is ``MARGIN`` below every baseline's."""
    auto = result.overall["auto"].peak_loss
    best = min(BASELINES, key=lambda name: result.overall[name].peak_loss)
    baseline = result.overall[best].peak_loss
    gain = (baseline - auto) / baseline
    met = gain >= MARGIN
    print(
        f"floor [{label}]: auto peak loss {auto:.3f} vs best baseline ({best}) {baseline:.3f}: "
        f"{gain:+.1%} (floor {MARGIN:.0%} lower): {'PASS' if met else 'FAIL'}\n"
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=SHARED)
    args = parser.parse_args()
    language = args.traces / LANGUAGE
    passed = []
    started = time.perf_counter()
    trace = read_trace(language if language.is_dir() else SAMPLE)
    result, elapsed = run(
        f"ServeGen language per model ({language if language.is_dir() else SAMPLE})",
        trace,
        600.0,
        tables=True,
    )
    elapsed = time.perf_counter() - started
    fast = elapsed <= BUDGET_SEC
    print(
        f"\nper-model backtest with reading: {elapsed:.1f} s (budget {BUDGET_SEC:g} s): "
        f"{'PASS' if fast else 'FAIL'}"
    )
    passed += [fast, floor("ServeGen language per model", result)]
    if language.is_dir():
        clients = read_trace(language, ReaderOptions(per_client=True))
        passed.append(
            floor(
                "ServeGen language per client", run("ServeGen language per client", clients, 600.0, False)[0]
            )
        )
    else:
        print(f"ServeGen language per client: {language} not found, skipped")
    azure = sorted((args.traces / AZURE).glob("*.csv"))
    if azure:
        trace = tuple(series for path in azure for series in read_trace(path))
        passed.append(
            floor(
                "Azure LLM 2023",
                run("Azure LLM 2023 (" + ", ".join(p.name for p in azure) + ")", trace, 60.0, True)[0],
            )
        )
    else:
        print(f"Azure LLM 2023: no CSV under {args.traces / AZURE}, skipped")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
