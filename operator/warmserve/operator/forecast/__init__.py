"""Per-model load forecasting: traces → concurrency series → forecasters → backtest (docs/forecasting.md).

Modules, each one concept: ``traces`` (readers, format detection), ``concurrency`` (mean and peak
concurrency per window), ``forecasters`` (the forecasters, their registry, and the scheduler's
``fit_load``/``forecast`` calls), ``backtest`` (rolling one-window-ahead evaluation, MAPE and MASE) and
``cli`` (the ``warmserve forecast`` subcommand).
"""
