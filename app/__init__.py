"""MLX LoRA Studio's desktop app (PySide6): thin views over the :mod:`mlx_lora` engine."""
