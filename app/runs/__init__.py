"""Runs: ``grad``, ``vmap``, ``jit``, ``jacfwd``, ``jacrev`` of a module, compiled once, run live.

A request flows ``spec`` -> ``client`` (web process) -> ``worker`` (a worker process) ->
``engine`` (``inputs``, ``structure``, ``keys``, ``limits``, ``pipeline``, ``compiling``,
``cache``) -> back to ``client`` -> ``results`` (JSON) or ``panel`` (HTML).

- ``spec``: the request models of the runs API (``RunRequest``, ``SweepRequest``, the input);
- ``client``: ``RunClient`` (``services.runs``), the web process's side: the refusals that
  need no module, the lane and affinity of the task, then the compile scopes, "what changed"
  and the count of compilations;
- ``worker``: ``run_task``, the worker's side: the module (built in the worker, kept), the
  engine of the worker process, the outcome pickled (``app.transfer``);
- ``engine``: ``RunEngine``, one per worker process: a request to a ``RunOutcome`` (NumPy
  results, the compiled entry's ``CompiledInfo``; ``run`` and ``sweep`` share their ending);
- ``inputs``: ``prepare_input``, the input array checked against the limits (training's typed
  values use it too), and the cache of recent inputs;
- ``structure``: a module's structure (typed leaf records, what is compiled in, what is an
  argument) and the memo of recently seen modules;
- ``keys``: ``RunKey``, everything a compiled run depends on, and what changed between two;
- ``limits``: what a run is refused for before it costs: the trace estimate, the result's size,
  the flops, the compiled program's memory;
- ``pipeline``: the function a run compiles (the forward pass or a loss under the
  transformations, with the checks that turn JAX's errors into advice);
- ``compiling``: trace, lower, compile (timed apart), execute;
- ``cache``: compiled runs in an LRU bounded in entries and bytes, each key compiled once;
- ``warmup``: JAX's persistent compilation cache and the presets compiled at start-up;
- ``service``: a run or sweep of a stored module in a compute slot (what the API and the
  panel share);
- ``scopes``: what a workspace or a room is told about compiling ("compiled now", "reused");
- ``eager``: a pipeline run op by op, as a script without ``jit`` would, for its time;
- ``errors``: ``RunError`` and JAX's errors explained;
- ``results``, ``code``: the outcome as JSON, and the Python code that computes the same;
- ``view``, ``panel``: the run panel of a module's page (its presets, form and fragments).
"""
