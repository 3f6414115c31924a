import numpy as np
import pandas as pd

from tpir_kedro.reporting.training_curves import training_curves_figure


def _history(variant, fold, seed, losses):
    rows = []
    for epoch, (step_loss, epoch_loss) in enumerate(losses):
        rows.append(
            {"epoch": epoch, "step": 2 * epoch + 1, "train_loss_step": step_loss, "train_loss_epoch": np.nan}
        )
        rows.append(
            {"epoch": epoch, "step": 2 * epoch + 1, "train_loss_step": np.nan, "train_loss_epoch": epoch_loss}
        )
    return pd.DataFrame(rows).assign(variant=variant, fold=fold, seed=seed)


def test_one_panel_per_variant_and_one_colour_per_fold_and_seed():
    history = pd.concat(
        [
            _history("clip", "holdout_B", 0, [(4.0, 4.1), (3.0, 3.2)]),
            _history("clip", "holdout_C", 0, [(4.2, 4.3), (3.5, 3.4)]),
            _history("supervised", "holdout_B", 0, [(1.5, 1.6), (1.0, 1.1)]),
        ],
        ignore_index=True,
    )
    fig = training_curves_figure(history, columns=3)
    assert [a.text for a in fig.layout.annotations] == ["clip", "supervised"]
    # Per run: a step line and epoch markers, NaN rows of the other kind dropped.
    assert [(t.mode, t.name) for t in fig.data] == [
        ("lines", "holdout_B, seed 0"),
        ("markers", "holdout_B, seed 0"),
        ("lines", "holdout_C, seed 0"),
        ("markers", "holdout_C, seed 0"),
        ("lines", "holdout_B, seed 0"),
        ("markers", "holdout_B, seed 0"),
    ]
    assert list(fig.data[1].y) == [4.1, 3.2]
    assert fig.data[0].line.color == fig.data[4].line.color  # same fold and seed, same colour
    assert fig.data[4].xaxis == "x2"
    assert [t.showlegend for t in fig.data] == [True, False, True, False, False, False]


def test_epoch_losses_alone_are_enough():
    history = _history("bleep", "holdout_B", 1, [(2.0, 2.0)]).drop(columns="train_loss_step")
    fig = training_curves_figure(history)
    assert [t.mode for t in fig.data] == ["markers"] and fig.data[0].showlegend
