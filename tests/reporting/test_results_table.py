import numpy as np
import pandas as pd

from tpir_kedro.reporting.results_table import mean_sd, results_table_figure


def test_mean_sd_cells():
    assert mean_sd(0.71234, 0.0312) == "0.712 ± 0.031"
    assert mean_sd(0.5, np.nan) == "0.500"
    assert mean_sd(np.nan, 0.1) == ""


def test_one_row_per_variant_and_probe_with_the_metrics_present():
    summary = pd.DataFrame(
        {
            "variant": ["clip", "imagenet", "clip"],
            "probe": ["logistic", "logistic", "none"],
            "macro_f1_mean": [0.6, 0.5, np.nan],
            "macro_f1_std": [0.1, np.nan, np.nan],
            "pearson_r_top50_mean": [0.2, 0.1, 0.2],
            "pearson_r_top50_std": [np.nan, np.nan, np.nan],
            "n_folds": [2, 2, np.nan],
        }
    )
    table = results_table_figure(summary).data[0]
    assert list(table.header.values) == ["variant", "probe", "macro-F1", "Pearson r (top genes)", "n_folds"]
    assert list(table.cells.values[2]) == ["0.600 ± 0.100", "0.500", ""]
    assert list(table.cells.values[4]) == ["2", "2", ""]
