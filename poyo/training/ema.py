"""An exponential moving average of the weights (``trainer.ema_decay``).

On one recording the weights jitter from batch to batch at the learning rates that learn
fast; their running average decodes better than any single step's (benchmarks/README.md,
"Real recordings"). With ``ema_decay > 0`` the average is what validation scores, what every
checkpoint's ``state_dict`` holds (so ``best.ckpt``, ``last.ckpt`` and ``model.pt`` are the
averaged model), and what the model holds once training ends. The weights being trained
travel beside it in the checkpoint (``ema["current"]``), so ``resume=true`` continues them.
"""

from __future__ import annotations

import lightning as L
import torch


class EMA(L.pytorch.callbacks.Callback):
    """Average ``w_avg <- d w_avg + (1 - d) w`` after every optimiser step, with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` steps, so that the first steps (far from
    where training ends) do not linger in the average.

    Args:
        decay: the average's decay per step, in (0, 1); 0.995 averages over about 200 steps.
    """

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.average: dict[str, torch.Tensor] | None = None
        self.updates = 0
        self._held: dict[str, torch.Tensor] | None = None  # the trained weights while the average is swapped in

    @staticmethod
    def _params(module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {n: p for n, p in module.named_parameters() if p.is_floating_point()}

    def on_fit_start(self, trainer, module) -> None:
        if self.average is None:
            self.average = {n: p.detach().float().clone() for n, p in self._params(module).items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for n, p in self._params(module).items():
                self.average[n].lerp_(p.detach().float(), 1 - d)
        self.updates += 1

    def _swap_in(self, module) -> None:
        if self.average is None or self._held is not None:
            return
        params = self._params(module)
        self._held = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.average[n])

    def _swap_out(self, module) -> None:
        if self._held is None:
            return
        with torch.no_grad():
            for n, p in self._params(module).items():
                p.copy_(self._held[n])
        self._held = None

    def on_validation_epoch_start(self, trainer, module) -> None:
        if trainer.state.fn == "fit":
            self._swap_in(module)

    def on_validation_end(self, trainer, module) -> None:  # after ModelCheckpoint saved the averaged weights
        if trainer.state.fn == "fit":
            self._swap_out(module)

    def on_train_end(self, trainer, module) -> None:
        self._swap_in(module)  # training is over: the model is the average from now on
        self._held = None

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        if self.average is None:
            return
        state = checkpoint["state_dict"]
        trained = self._held if self._held is not None else dict(self._params(module))
        current = {}
        for n, avg in self.average.items():
            if n in state:
                current[n] = trained[n].detach().to(state[n].dtype).clone()
                state[n] = avg.to(state[n].dtype).clone()
        checkpoint["ema"] = {"decay": self.decay, "updates": self.updates, "current": current}

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        ema = checkpoint.get("ema")
        if ema is None or trainer.state.fn != "fit":  # testing a checkpoint: its state_dict is the average
            return
        # resuming: the state_dict (the average) was loaded into the model; put the trained weights back
        self.average = {
            n: v.detach().float().clone() for n, v in checkpoint["state_dict"].items() if n in ema["current"]
        }
        self.updates = int(ema["updates"])
        with torch.no_grad():
            for n, p in self._params(module).items():
                if n in ema["current"]:
                    p.copy_(ema["current"][n])
