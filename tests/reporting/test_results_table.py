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


def test_the_paired_difference_shown_is_macro_f1_on_probe_rows_and_r_on_expression_rows():
    summary = pd.DataFrame(
        {
            "variant": ["clip", "clip"],
            "probe": ["logistic", "ridge"],
            "macro_f1_mean": [0.6, np.nan],
            "pearson_r_top50_mean": [np.nan, 0.2],
            "macro_f1_diff_vs_imagenet_mean": [0.05, np.nan],
            "macro_f1_diff_vs_imagenet_ci_low": [0.01, np.nan],
            "macro_f1_diff_vs_imagenet_ci_high": [0.09, np.nan],
            "macro_f1_diff_vs_imagenet_n_folds": [4, np.nan],
            "macro_f1_diff_vs_imagenet_n_folds_ahead": [3, np.nan],
            "pearson_r_diff_vs_imagenet_mean": [np.nan, -0.02],
            "pearson_r_diff_vs_imagenet_ci_low": [np.nan, -0.04],
            "pearson_r_diff_vs_imagenet_ci_high": [np.nan, 0.0],
            "pearson_r_diff_vs_imagenet_n_folds": [np.nan, 4],
            "pearson_r_diff_vs_imagenet_n_folds_ahead": [np.nan, 1],
        }
    )
    table = results_table_figure(summary).data[0]
    header = list(table.header.values)
    column = {name: list(table.cells.values[i]) for i, name in enumerate(header)}
    assert column["Δ vs imagenet (macro-F1 or r)"] == ["0.050", "-0.020"]
    assert column["Δ 95% interval"] == ["[+0.010, +0.090]", "[-0.040, +0.000]"]
    assert column["folds ahead"] == ["3/4", "1/4"]
