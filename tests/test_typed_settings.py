"""Parameter sections as typed settings: defaults equal the conf, values cast, bad ones named."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tpir_kedro.cohort.settings import (
    BatchEffectSettings,
    CohortSettings,
    GeneSelection,
    PatchSettings,
    SpotQC,
)
from tpir_kedro.imaging.predict_settings import PredictSettings
from tpir_kedro.reporting.settings import ReportingSettings
from tpir_kedro.typed_settings import settings_from_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def _section(env: str, file: str, key: str):
    return yaml.safe_load((CONF / env / file).read_text())[key]


@pytest.mark.parametrize(
    ("cls", "file", "key"),
    [
        (CohortSettings, "parameters_data_engineering.yml", "cohort"),
        (SpotQC, "parameters_data_engineering.yml", "spot_qc"),
        (GeneSelection, "parameters_data_engineering.yml", "genes"),
        (PatchSettings, "parameters_data_engineering.yml", "patches"),
        (BatchEffectSettings, "parameters_data_engineering.yml", "batch_effect"),
        (PredictSettings, "parameters_predict.yml", "predict"),
        (ReportingSettings, "parameters_reporting.yml", "reporting"),
    ],
)
def test_the_defaults_are_the_base_conf(cls, file, key):
    assert cls.from_dict(_section("base", file, key)) == cls()


def test_the_her2st_overrides_are_read():
    assert (
        GeneSelection.from_dict(_section("her2st", "parameters_data_engineering.yml", "genes")).n_top_genes
        == 2000
    )
    assert (
        PatchSettings.from_dict(_section("her2st", "parameters_data_engineering.yml", "patches")).size_px
        == 224
    )
    assert PredictSettings.from_dict(_section("her2st", "parameters_predict.yml", "predict")).batch_size == 64


@dataclass(frozen=True)
class _Inner:
    depth: float = 1.0


@dataclass(frozen=True)
class _Outer:
    name: str
    count: int = 1
    ratio: float | None = None
    names: tuple[str, ...] = ("a",)
    scales: dict[str, float] = field(default_factory=dict)
    flag: bool = False
    inner: _Inner = field(default_factory=_Inner)
    anything: Any = None


def test_values_are_cast_to_their_annotations():
    out = settings_from_dict(
        _Outer,
        {
            "name": 7,
            "count": "3",
            "ratio": 1,
            "names": ["x", 2],
            "scales": {1: "0.5"},
            "flag": "true",
            "inner": {"depth": 2},
            "anything": [1, "a"],
        },
        "s",
    )
    assert out == _Outer(
        name="7",
        count=3,
        ratio=1.0,
        names=("x", "2"),
        scales={"1": 0.5},
        flag=True,
        inner=_Inner(2.0),
        anything=[1, "a"],
    )
    assert settings_from_dict(_Outer, {"name": "n", "ratio": None}, "s").ratio is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "n", "cont": 2}, r"s: unknown key\(s\) \['cont'\]"),
        ({"count": 2}, r"s: missing required key\(s\) \['name'\]"),
        ({"name": "n", "count": 2.5}, "s.count must be int"),
        ({"name": "n", "count": True}, "s.count must be int"),
        ({"name": "n", "count": None}, "s.count must be int"),
        ({"name": "n", "names": "x"}, "s.names must be a list"),
        ({"name": "n", "flag": 1}, "s.flag must be bool"),
        ({"name": "n", "inner": {"deep": 1}}, r"s.inner: unknown key"),
        ({"name": "n", "inner": {"depth": "deep"}}, "s.inner.depth must be float"),
        ({"name": "n", "scales": {"A1": "x"}}, "s.scales.A1 must be float"),
        ({"name": ["n"]}, "s.name must be str"),
    ],
)
def test_a_bad_value_is_named(params, message):
    with pytest.raises(ValueError, match=message):
        settings_from_dict(_Outer, params, "s")


def test_sections_are_read_as_the_cohort_source_takes_them():
    assert CohortSettings().section_selection() is None
    assert CohortSettings.from_dict({"sections": "labelled"}).section_selection() == "labelled"
    assert CohortSettings.from_dict({"sections": "A1 B1"}).section_selection() == ["A1", "B1"]
    assert CohortSettings.from_dict({"sections": ["A1", "B1"]}).section_selection() == ["A1", "B1"]
    assert CohortSettings.from_dict({"um_per_px": {"A1": 1}}).um_per_px == {"A1": 1.0}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CohortSettings.from_dict({"spot_pitch_um": 0}), "cohort.spot_pitch_um must be positive"),
        (lambda: CohortSettings.from_dict({"um_per_px": {"A1": -1}}), "cohort.um_per_px must be positive"),
        (lambda: SpotQC.from_dict({"min_counts": -1}), "spot_qc.min_counts must be at least 0"),
        (lambda: GeneSelection.from_dict({"min_spot_fraction": 2}), "fraction of spots"),
        (lambda: PatchSettings.from_dict({"size_px": 0}), "patches.size_px must be at least 1"),
        (lambda: PredictSettings.from_dict({"tile_grid": {"max_saturation": 300}}), "max_saturation <= 255"),
        (lambda: PredictSettings.from_dict({"um_per_px": 0}), "predict.um_per_px must be positive"),
        (lambda: PredictSettings.from_dict({"tile_grid": {"stride": 1}}), "predict.tile_grid: unknown key"),
        (lambda: ReportingSettings.from_dict({"confusion_probe": "lasso"}), "reporting.confusion_probe"),
    ],
)
def test_a_setting_out_of_range_is_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_catalogs_predict_keys_pass_and_devices_resolve():
    settings = PredictSettings.from_dict({"slide": "/x.jpg", "spots": None, "labels": None, "device": "cpu"})
    assert settings.torch_device == "cpu"
    assert PredictSettings.from_dict({"device": None}).torch_device is None
    assert PredictSettings().torch_device is None
