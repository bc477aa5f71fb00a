"""Training and dynamics: datasets, losses, background jobs and the library's local rules.

- ``datasets``: the library's seeded sets, the prototype task and uploaded CSV files;
- ``gradient``: gradient training of any catalog module (Optax, jitted steps);
- ``local``: the library networks' local rule (the reference protocol of docs/library.md);
- ``jobs``: background jobs with progress, stop, per-workspace limits and persistence;
- ``dynamics``: a network's state over time under ``step`` or ``step_inference``.
"""
