"""Weight averaging (trainer.ema_decay): the average is what validation scores and what the
checkpoints and the final model hold; the trained weights travel beside it, so a resumed run
continues exactly as an uninterrupted one."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from poyo.io import safe_load
from poyo.training.ema import EMA
from poyo.training.guards import SettingError, check_settings


class Regression(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(3, 1)
        self.trajectory, self.validated = [], []

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x), y)

    def on_train_batch_end(self, *args):
        self.trajectory.append(self.lin.weight.detach().clone())

    def validation_step(self, batch, _):
        self.validated.append(self.lin.weight.detach().clone())
        self.log("val/metric", -torch.nn.functional.mse_loss(self.lin(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(64, 3, generator=g)
        return torch.utils.data.DataLoader(list(zip(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))), batch_size=8)

    val_dataloader = train_dataloader


def fit(tmp_path, steps, ckpt_path=None):
    module = Regression()
    ema = EMA(0.9)
    trainer = L.Trainer(
        max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=1, default_root_dir=tmp_path,
        callbacks=[ema, L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=4)],
    )  # fmt: skip
    trainer.fit(module, ckpt_path=ckpt_path)
    return module, ema


def expected_average(trajectory, start):
    avg = start.clone()
    for n, w in enumerate(trajectory):
        d = min(0.9, (1 + n) / (10 + n))
        avg = d * avg + (1 - d) * w
    return avg


def test_the_average_is_validated_saved_and_kept_after_training(tmp_path):
    start = Regression().lin.weight.detach().clone()
    module, ema = fit(tmp_path, 16)  # 2 epochs of 8 steps
    avg = expected_average(module.trajectory, start)
    torch.testing.assert_close(module.lin.weight.detach(), avg)  # the model is the average once training ends
    torch.testing.assert_close(
        module.validated[0], expected_average(module.trajectory[:8], start)
    )  # epoch 1's validation
    assert not torch.allclose(avg, module.trajectory[-1], atol=1e-4)  # the average is not the last step
    last = safe_load(tmp_path / "last.ckpt")
    torch.testing.assert_close(last["state_dict"]["lin.weight"], avg)
    torch.testing.assert_close(last["ema"]["current"]["lin.weight"], module.trajectory[-1])


def test_a_resumed_run_continues_the_trained_weights_and_their_average(tmp_path):
    whole, _ = fit(tmp_path / "a", 16)
    fit(tmp_path / "b", 8)
    resumed, ema = fit(tmp_path / "b", 16, ckpt_path=tmp_path / "b" / "last.ckpt")
    torch.testing.assert_close(resumed.trajectory, whole.trajectory[8:])  # the trained weights went on, not the average
    torch.testing.assert_close(resumed.lin.weight.detach(), whole.lin.weight.detach())
    assert ema.updates == 16


def test_bad_decays_are_refused():
    with pytest.raises(ValueError, match="decay"):
        EMA(1.0)
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer.ema_decay=1.5"])
    with pytest.raises(SettingError, match="trainer.ema_decay"):
        check_settings(OmegaConf.to_container(cfg, resolve=True))
