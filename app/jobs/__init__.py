"""The app's jobs: engine work run off the GUI thread and heard about as Qt signals.

- :mod:`app.jobs.workers`: :class:`~app.jobs.workers.Job`, one engine function on the
  thread pool (downloads, tokenisation, chat, export);
- :mod:`app.jobs.training_supervisor`: training, in a child process whose JSON events
  come back as the engine's event dataclasses.
"""
