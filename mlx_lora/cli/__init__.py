"""The ``mlx-lora`` command line: one sub-module per command group."""
