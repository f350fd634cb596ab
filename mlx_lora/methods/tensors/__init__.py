"""The methods' MLX code, imported only when a model is adapted, trained or loaded with an
adapter: the adapter layer classes (:mod:`.layers`), AdaLoRA's rank pruning
(:mod:`.adalora`) and ReLoRA's merges (:mod:`.relora`)."""
