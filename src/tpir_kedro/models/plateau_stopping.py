"""Stop a training run once its loss has levelled off: the training-runs table's plateau rule, applied
while the run trains.

Every run has ``max_steps`` as its cap. With ``stop_at_plateau`` the run is also checked every
``plateau_check_every`` steps once it has taken ``plateau_min_steps``: when its step losses so far are
in the *plateaued* state of :func:`~tpir_kedro.models.training_runs.loss_state` (the loss fell beyond
its noise, and the last quarter of the steps moved it by less than a tenth of the whole fall, or by
less than its noise), it stops. The same rule then reads the run's logged losses for the training-runs
table, so a stopped run is reported as what it was judged to be.

Why: a fixed step count is either too few for some losses or wasted on others; in the frozen regime
the adapter's loss levels off at very different steps for different objectives. The learning-rate
schedule still spans the cap, so a stopped run ends at a higher learning rate than a capped one.
"""

from __future__ import annotations

import lightning as L
import torch

from tpir_kedro.models.training_runs import loss_state


class PlateauStopping(L.Callback):
    """Requests the Trainer to stop once the run's step losses (key ``monitor``) have plateaued.

    Parameters
    ----------
    min_steps
        steps before the first check.
    check_every
        steps between checks.
    tolerance
        the rule's share of the whole change the last quarter may still make.
    """

    def __init__(self, min_steps: int = 200, check_every: int = 50, tolerance: float = 0.1):
        if int(min_steps) < 4 or int(check_every) < 1:
            raise ValueError(f"need min_steps >= 4 and check_every >= 1, got {min_steps} and {check_every}")
        self.min_steps, self.check_every, self.tolerance = int(min_steps), int(check_every), float(tolerance)
        self.losses: list[float] = []
        self.stopped_at: int | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        # The logged train_loss (the objective alone: an adversary's term is logged apart); the
        # returned loss where a module does not log it.
        loss = trainer.callback_metrics.get("train_loss_step")
        if loss is None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach() if isinstance(loss, torch.Tensor) else loss))
        n = len(self.losses)
        if n >= self.min_steps and (n - self.min_steps) % self.check_every == 0:
            if loss_state(self.losses, self.tolerance)["plateaued"]:
                self.stopped_at = n
                trainer.should_stop = True

    # The losses travel with last.ckpt, so a resumed run judges its whole history.
    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "stopped_at": self.stopped_at}

    def load_state_dict(self, state_dict: dict) -> None:
        self.losses = [float(x) for x in state_dict.get("losses", [])]
        self.stopped_at = state_dict.get("stopped_at")
