from mlx.utils import tree_flatten

from mlx_lora.adapters import resolve_adapter
from mlx_lora.train import train
from mlx_lora.train.prepare import prepare_model
from tests.core.test_train_helpers import tiny_config, write_dataset


def test_lora_fa_trains_b_only_and_a_run_saves_a_plain_lora(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "persona", train=8, valid=2)
    config = tiny_config(tiny_model, data, tmp_path / "run", fine_tune_type="lora_fa", rank=4, iters=2)
    names = [k for k, _ in tree_flatten(prepare_model(config).model.trainable_parameters())]
    assert names and all(n.endswith("lora_b") for n in names)
    train(config)
    assert resolve_adapter(str(tmp_path / "run")).fine_tune_type == "lora"
