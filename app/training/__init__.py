"""Training and dynamics: datasets, losses, background jobs and the library's local rules.

- ``service``: from a request to a job or a dynamics answer (the request models, the
  defaults, which training a module gets); what the router calls;
- ``forms``: the module page's train and dynamics forms as those requests (errors named as
  the form labels its fields); ``panels``: what those panels show, and the job a panel's
  fragment is about;
- ``datasets``: the library's seeded sets, the prototype task and uploaded CSV files;
- ``losses``: losses, predictions and accuracy for gradient training;
- ``gradient``: gradient training of any catalog module (Optax, jitted steps);
- ``local``: the library networks' local rule (the reference protocol of docs/library.md);
- ``jobs``: jobs with progress, pause, step, stop, their limits (per workspace, one per
  module, flops and seconds per job) and persistence; a job's state lives there, its steps run
  in chunks in worker processes;
- ``chunks``: one chunk of a job as a worker runs it (the model rebuilt from its spec and the
  state's arrays, compiled steps kept warm per structure); ``plan``: what the two kinds of
  plan share (a chunk's driver, a step's cost as a worker's task); ``scheduler``: the turn in
  which the running jobs' chunks go to the workers (round robin; a watched job when it is due);
- ``speed``: the workers' measured speed, and a step's cost by it (the seconds of a job never
  timed, so that one that cannot fit in ``max_job_seconds`` is refused before it starts);
- ``storage``: uploaded CSV files and the records of jobs in the database;
- ``figures``, ``views``: what a job shows (loss and accuracy curves, the decision boundary or
  the fit, the parameters' diff);
- ``progress``: a job's progress as the page shows it (the fragment's context, the counters in
  words, and the live frames a playing job streams);
- ``dynamics``: a network's state over time under ``step`` or ``step_inference`` (computed in
  a worker process).
"""
