"""Datasets: the JSONL formats mlx-lm trains on, checking every line before a model
is loaded, splitting, rendering records into trained/masked tokens, and token
statistics.

- :mod:`~mlx_lora.data.records`: the chat/completion/text formats and one record's checks;
- :mod:`~mlx_lora.data.validate`: files and folders checked line by line (``file:line: reason``);
- :mod:`~mlx_lora.data.dataset`: validated records split into train/valid/test;
- :mod:`~mlx_lora.data.template`: chat templates rendered in a sandbox;
- :mod:`~mlx_lora.data.sandbox`: that sandbox, bounded in steps, CPU time and size per render;
- :mod:`~mlx_lora.data.render`: a record → tokens and where the loss is taken;
- :mod:`~mlx_lora.data.stats`: token statistics and train/valid overlap.

Submodules are imported by name; this package imports nothing heavy on its own.
"""
