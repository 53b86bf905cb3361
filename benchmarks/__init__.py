"""The project's benchmarks: each measures one thing, calls the harness as a user would, and
appends its figures, with the machine they were measured on, to benchmarks/results/<name>.csv.

Run them from the checkout (they write their results there):

    python -m benchmarks                      # the list below
    python -m benchmarks.overhead [--quick]   # harness vs bare PyTorch, tracking, diagnostics
    python -m benchmarks.scaling              # time per step and peak memory against the gap
    python -m benchmarks.batched              # the batched model vs K separate runs, per cell
                                              # (--driver: through the harness's driver)
    python -m benchmarks.sweep                # runs/hour of a real sweep, batched vs one per job
    python -m benchmarks.frontier [--oracle]  # frontier search vs the full grid
    python -m benchmarks.profile              # where a run's wall time goes
    python -m benchmarks report               # the report on a synthetic store (report.bench)
    python -m benchmarks.cells                # minGRU, minLSTM, LRU step time vs LSTM, GRU
    python -m benchmarks refusal              # how fast harness-train refuses bad input
    python -m benchmarks fixed_cost           # a one-step run's wall time: the fixed cost

What each measures, and what the results say: docs/benchmark.md.
"""
