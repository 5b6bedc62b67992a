"""The training debugger and profiler: what train.py watches while it trains, and the rules that judge it.

    debugger.py, tensor_stats.py, debug_rules.py      per-layer statistics and the debugger's rules
    profiler.py, system_monitor.py, step_timing.py    system sampling, step timing and the profiler's rules
      profile_rules.py
    rule_spec.py                                      rule selection, collections and verdicts (both sides)
    run_files.py                                      their JSON files, written atomically
    tensorboard_log.py, smdebug_adapter.py            TensorBoard scalars and the optional smdebug hook

Imported by train.py as ``from observability import debugger``; SageMaker ships this folder with the source dir.
The report that reads what these write is the ``report`` package beside it.
"""
