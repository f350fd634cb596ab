"""``mlx-lora models search|download|list|rm``: the Hugging Face Hub side."""


def register(msub) -> None:
    """Adds the Hub actions to ``mlx-lora models`` (filled in with mlx_lora.models.hub)."""
