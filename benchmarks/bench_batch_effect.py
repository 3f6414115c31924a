"""Benchmark: a controlled batch-effect experiment -- when does a batch-agnostic gene encoder help?

    .venv/bin/python benchmarks/bench_batch_effect.py [--quick] [--out DIR] [--work DIR]
    .venv/bin/python benchmarks/bench_batch_effect.py --render   # figures from the committed CSVs
    .venv/bin/python benchmarks/bench_batch_effect.py --gene-side  # the gene side's patient decodability

The demo simulator's dials (``demo_cohort.batch_strength`` k: every patient effect in expression x k;
``stain_strength`` s: the per-patient stain spread x s) make the mechanism of the claim a variable.
This grid ran on the simulator as of commit 221b721, whose k left the section effects alone; since
then k scales them too (the second grid, bench_batch_effect_2.py), so its k != 1 cells no longer
re-simulate to the committed ones (k = 1 does, bit for bit).
Every cell of the grid k in {0, 1, 3} x s in {1, 3} is a 6-patient demo (seed 0) run through the
project's own ``demo_cohort`` and ``train`` pipelines (KedroSession, scratch project under --work,
one per s, so cells of one s share the feature cache and the runs that do not depend on k), with
every patient held out once and three image-training seeds (the gene encoders use gene_vae.seed 0;
seeds are averaged within a fold, n = 6 held-out patients). ``--quick``: k in {0, 3}, s = 3, two
folds, one seed (a smoke run, not a result).

Arms: ``clip``, ``scvi_infonce``, ``scanvi_similarity``, ``bleep``, ``supervised``, ``imagenet`` and
``clip_single_patient`` (CLIP with one patient per batch: no cross-patient negatives). The
**oracle** (CLIP against the same spots' k = 0 expression: perfect correction) needs no run of its
own: for one s the cells' images, spots and labels are identical across k (tests/cohort/
test_demo_dials.py), so CLIP of the k = 0 cell *is* CLIP trained on these spots' uncorrected-free
expression; its fold scores are paired with every k of that s. Trained arms are read in their
adapter space, imagenet in its backbone space, every arm with the same logistic and kNN probes.

Readouts per cell: held-out macro-F1 (logistic, kNN); the mechanism check -- how well the patient
can be decoded from the trained image embeddings of the training patients (class-balanced CV,
chance 1/5; evaluation/patient_decodability.py); the gene side's silhouette by patient (the
pipeline's scorecard: ``pca`` is the uncorrected expression CLIP's MLP sees, ``scvi``, ``scanvi``);
Δ(k) = F1(scvi_infonce) - F1(clip), paired per fold, 95% t interval, folds ahead.

Pre-registered reading (written before the first full run; reported whatever comes out; logistic
probe, macro-F1):

- Positive control, per s: ``supervised`` (adapter) beats ``imagenet`` (backbone) by a mean paired
  macro-F1 >= +0.05 with >= 4 of 6 folds ahead at k = 1. Without it no reading is made for that s.
- *Supported* if, at s = 3: Δ rises with k (Δ(0) <= Δ(1) <= Δ(3) and Δ(3) - Δ(0) >= 0.02); Δ(3) has
  >= 5 of 6 folds ahead; |Δ(0)| <= 0.02; CLIP's patient decodability rises with k (dec(3) - dec(0)
  >= 0.10) but scvi_infonce's does not (its rise < 0.05); and the oracle ≈ scvi_infonce at k = 3
  (paired interval of F1(oracle) - F1(scvi_infonce) contains 0 and |mean| <= 0.03).
- *Falsified for this simulator* if CLIP visibly encodes the patient (its decodability rise >= 0.10
  at s = 3) but Δ(3) <= 0.01 or its interval spans 0.
- *Inconclusive* if CLIP never encodes the patient (rise < 0.10 at every s): the dial to turn
  further is then named (k beyond 3, or a confounded patient effect along the class markers), and
  the grid is not re-run until it "works" without saying so.
- Anything else is *mixed*: the criteria that held and those that did not are listed.

Added after the grid ran (exploratory, not part of the verdict above; written before its run): the
**gene side's patient decodability** -- the image side's check (same class-balanced logistic CV,
training patients of each fold, chance 1/5) on each fold's gene embeddings, the targets the image
encoders are taught from (``--gene-side`` re-runs the gene side of finished cells to get them). Why:
at k >= 1 the scvi_infonce image embeddings decoded the patient better than CLIP's, although the scVI
latent's silhouette by patient is ~0; a silhouette measures clusters, not what a linear read-out
finds. Expected if the scVI latent is what teaches the patient: every gene embedding near chance at
k = 0 (<= 0.30: k = 0 removes the patient effect), and scVI's well above it at k >= 1 (>= 0.50),
rising with k. Refuted if scVI's stays <= 0.30 at k >= 1: the scvi_infonce image encoder's patient
signal would then come from elsewhere (the images' stain cue), not from its target.

Writes to --out (default benchmarks/results/batch_effect_demo; --quick: batch_effect_quick):
cells/<cell>/ (each cell's results, patient decodability, gene scorecard, training runs; a finished
cell is not re-run), grid.csv (cell x arm x probe), deltas.csv (paired comparisons per cell),
reading.json (the verdict and every criterion), figures.json and figures.html (plotly; the HTML is
self-contained, not committed). ``--gene-side`` adds cells/<cell>/gene_label_transfer.csv (per
embedding x fold) and gene_side_rerun.json (its time; its largest difference from the cell's own
gene scorecard, which should be ~0), and the decodability columns of gene_silhouettes.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_project import scratch_project  # noqa: E402

KS, SEEDS = (0.0, 1.0, 3.0), (0, 1, 2)
SS = (3.0, 1.0)  # the pre-registered reading is at s = 3: its column runs first
QUICK_KS, QUICK_SS, QUICK_FOLDS = (0.0, 3.0), (3.0,), ["A", "B"]
N_PATIENTS = 6
ARMS = ["clip", "scvi_infonce", "scanvi_similarity", "bleep", "supervised", "imagenet", "clip_single_patient"]
ORACLE = "oracle"
SINGLE = {
    "clip_single_patient": {
        "description": "CLIP with one patient per batch (no cross-patient negatives): a control",
        "gene_input": "log_hvg",
        "loss": "infonce",
        "loss_params": {"temperature": 0.07},
        "batches": "single_patient",
    }
}
CELL_TABLES = ("results", "patient_decodability", "gene_embedding_scorecard", "training_runs")
# The gene side's per-fold table (label transfer and patient decodability); cells run before it
# carried the decodability get it from --gene-side, so it is read where present.
GENE_SIDE_TABLE = "gene_label_transfer"
GENE_SIDE_OUTPUTS = [GENE_SIDE_TABLE, "gene_embedding_scorecard"]
NO_GENE_SIDE = pd.DataFrame(
    {"embedding": pd.Series(dtype=str), "patient_decodability": pd.Series(dtype=float)}
)
PROBE = "logistic"  # the pre-registered probe
# Thresholds of the pre-registered reading (module docstring).
CONTROL_MARGIN, CONTROL_AHEAD = 0.05, 4
RISE, FLAT, ZERO_BAND, MONOTONE_GAP, ORACLE_BAND, AHEAD_AT_3, FALSIFY_MAX = (
    0.10,
    0.05,
    0.02,
    0.02,
    0.03,
    5,
    0.01,
)


def cell_name(k: float, s: float) -> str:
    return f"k{k:g}_s{s:g}"


def cell_params(k: float, s: float, seeds, folds) -> dict:
    return {
        "demo_cohort": {"n_patients": N_PATIENTS, "batch_strength": float(k), "stain_strength": float(s)},
        # The grid's cells are declared from this list, so full LOPO lists every patient.
        "folds": {"held_out_patients": list(folds or string.ascii_uppercase[:N_PATIENTS])},
        # Spot QC would make k choose the spots (a strong patient effect concentrates a spot's counts
        # on fewer genes, below min_genes): only empty spots go, so every k scores the same spots.
        "spot_qc": {"min_counts": 1, "min_genes": 1},
        "image_runs": {"seeds": list(seeds), "final_models": False, "variants": ARMS},
        # Expression prediction is not a readout here: retrieval only (ridge costs a PCA per model).
        "evaluation": {"expression_protocols": ["retrieval"]},
        "variants": SINGLE,
        "gene_vae": {"seed": 0},
        "gene_scorecard": {"seed": 0},
        "contrastive": {"progress_bar": False, "stop_at_plateau": False},  # as it ran: 2,000 steps each
    }


def _cell_session(project: Path, params: dict, outputs, **run) -> dict:
    """The cell's demo cohort, then ``session.run(**run)`` in the scratch project; ``outputs`` loaded."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["demo_cohort"])
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(**run)
        catalog = session.load_context().catalog
        return {name: catalog.load(name) for name in outputs}


def run_cell(project: Path, k: float, s: float, seeds, folds, out: Path) -> dict:
    """The cell's demo cohort and ``train`` run; its tables under ``out`` (written last: a cell with
    its ``cell.json`` is complete).
    """
    start = time.perf_counter()
    tables = _cell_session(
        project,
        cell_params(k, s, seeds, folds),
        (*CELL_TABLES, GENE_SIDE_TABLE, "run_manifest"),
        pipeline_names=["train"],
    )
    manifest = tables.pop("run_manifest")
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    info = {
        "k": k,
        "s": s,
        "seeds": list(seeds),
        "folds": folds,
        "run_id": manifest["run_id"],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "stages": manifest["wall_seconds"]["stages"],
    }
    (out / "cell.json").write_text(json.dumps(info, indent=1))
    return info


def rerun_gene_side(project: Path, k: float, s: float, folds, out: Path) -> dict:
    """A finished cell's gene side again (its demo cohort, ``data_engineering`` and ``gene_vae`` up to
    the label-transfer table), for a readout added after the cell ran: the per-fold table is written
    to ``out``, next to the cell's tables, and the rerun is checked against the cell's own scorecard
    (the same seeds should give the same gene encoders; the largest difference is recorded).
    """
    start = time.perf_counter()
    loaded = _cell_session(
        project,
        cell_params(k, s, SEEDS, folds),
        GENE_SIDE_OUTPUTS,
        pipeline_names=["data_engineering", "gene_vae"],
        to_outputs=GENE_SIDE_OUTPUTS,
    )
    transfer, card = (loaded[name] for name in GENE_SIDE_OUTPUTS)
    committed = pd.read_csv(out / "gene_embedding_scorecard.csv").set_index("embedding")
    card = card.set_index("embedding")
    checked = ["silhouette_patient", "silhouette_class", "lopo_knn_macro_f1"]
    common = committed.index.intersection(card.index)
    difference = (card.loc[common, checked] - committed.loc[common, checked]).abs().max().max()
    tmp = out / f"{GENE_SIDE_TABLE}.csv.tmp"
    transfer.to_csv(tmp, index=False)
    tmp.replace(out / f"{GENE_SIDE_TABLE}.csv")
    info = {
        "cell": cell_name(k, s),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "max_abs_difference_vs_cell_scorecard": float(difference),
        "checked": checked,
    }
    (out / "gene_side_rerun.json").write_text(json.dumps(info, indent=1))
    return info


# --- reading the cells ---------------------------------------------------------------------------


def _read_cell(folder: Path) -> dict:
    optional = folder / f"{GENE_SIDE_TABLE}.csv"
    return (
        {name: pd.read_csv(folder / f"{name}.csv") for name in CELL_TABLES}
        | ({GENE_SIDE_TABLE: pd.read_csv(optional)} if optional.is_file() else {})
        | {"info": json.loads((folder / "cell.json").read_text())}
    )


def _arm_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Classification rows of every arm in its own space (adapter when trained, imagenet's backbone)."""
    # Expression rows carry their protocol (retrieval, ridge) as the probe.
    rows = results[results["probe"].isin(["logistic", "knn"]) & results["variant"].isin(ARMS)]
    own = np.where(rows["variant"] == "imagenet", "backbone", "adapter")
    return rows[rows["space"] == own]


def fold_scores(cells: dict) -> pd.DataFrame:
    """Per cell x arm x probe x held-out patient: macro-F1 averaged over seeds, plus the oracle."""
    from tpir_kedro.evaluation.fold_statistics import fold_means

    frames = []
    for (k, s), cell in cells.items():
        means = fold_means(_arm_rows(cell["results"]), ["variant", "probe"], ["macro_f1"])
        frames.append(means.assign(k=k, s=s))
    scores = pd.concat(frames, ignore_index=True)
    return pd.concat([scores, *_oracle_rows(scores, cells)], ignore_index=True)


def _oracle_rows(table: pd.DataFrame, cells: dict) -> list[pd.DataFrame]:
    """The oracle of each finished cell: CLIP of the k = 0 cell of its s (same images, spots, labels)."""
    oracle = table[(table["variant"] == "clip") & (table["k"] == 0.0)]
    return [oracle[oracle["s"] == s].assign(k=k, variant=ORACLE) for k, s in sorted(cells)]


def decodability(cells: dict) -> pd.DataFrame:
    """Per cell x arm: patient decodability of its own space, mean over folds and seeds (and its sd over folds)."""
    rows = []
    for (k, s), cell in cells.items():
        d = cell["patient_decodability"]
        d = d[d["variant"].isin(ARMS)]
        d = d[d["space"] == np.where(d["variant"] == "imagenet", "backbone", "adapter")]
        per_fold = d.groupby(["variant", "fold"])["accuracy"].mean().groupby("variant")
        for variant, values in per_fold:
            chance = float(d.loc[d["variant"] == variant, "chance"].mean())
            rows.append(
                {
                    "k": k,
                    "s": s,
                    "variant": variant,
                    "patient_decodability": values.mean(),
                    "patient_decodability_sd": values.std(ddof=1),
                    "chance": chance,
                }
            )
    table = pd.DataFrame(rows)
    return pd.concat([table, *_oracle_rows(table, cells)], ignore_index=True)


def gene_silhouettes(cells: dict) -> pd.DataFrame:
    """Per cell x gene embedding: silhouettes of the all-patient fit and, where the cell has its
    per-fold table, the patient decodability of the fold fits on their training patients (mean over
    folds; the image side's check, on what the image encoder is taught from).
    """
    rows = []
    for (k, s), cell in cells.items():
        card = cell["gene_embedding_scorecard"].set_index("embedding")
        # A cell without the per-fold table gets NaN (the mean and sd of no folds).
        folds = cell.get(GENE_SIDE_TABLE, NO_GENE_SIDE).set_index("embedding")["patient_decodability"]
        for embedding in ("pca", "scvi", "scanvi"):
            if embedding in card.index:
                decod = folds[folds.index == embedding]
                rows.append(
                    {
                        "k": k,
                        "s": s,
                        "embedding": embedding,
                        "silhouette_patient": card.loc[embedding, "silhouette_patient"],
                        "silhouette_class": card.loc[embedding, "silhouette_class"],
                        "patient_decodability": decod.mean(),
                        "patient_decodability_sd": decod.std(ddof=1),
                    }
                )
    return pd.DataFrame(rows)


def grid_table(scores: pd.DataFrame, dec: pd.DataFrame) -> pd.DataFrame:
    """Cell x arm x probe: mean macro-F1 over folds (sd, n), with the arm's patient decodability."""
    grouped = scores.groupby(["s", "k", "variant", "probe"])["macro_f1"]
    grid = grouped.agg(macro_f1_mean="mean", macro_f1_sd="std", n_folds="count").reset_index()
    return grid.merge(dec, on=["s", "k", "variant"], how="left")


COMPARISONS = [
    ("delta", "scvi_infonce", "clip"),  # Δ(k), the pre-registered quantity
    ("scanvi_similarity_vs_clip", "scanvi_similarity", "clip"),
    ("oracle_vs_clip", ORACLE, "clip"),
    ("oracle_vs_scvi_infonce", ORACLE, "scvi_infonce"),
    ("single_patient_vs_clip", "clip_single_patient", "clip"),
    ("supervised_vs_imagenet", "supervised", "imagenet"),  # the positive control
]


def deltas(scores: pd.DataFrame) -> pd.DataFrame:
    """Paired per-fold differences of each comparison per cell and probe (fold_statistics' rule)."""
    from tpir_kedro.evaluation.fold_statistics import FOLD, paired_difference

    rows = []
    for (s, k, probe), cell in scores.groupby(["s", "k", "probe"]):
        by = cell.set_index(["variant", FOLD])["macro_f1"]
        for name, a, b in COMPARISONS:
            if a in by.index.get_level_values(0) and b in by.index.get_level_values(0):
                stats = paired_difference(by.loc[a], by.loc[b])
                rows.append({"s": s, "k": k, "probe": probe, "comparison": name, "a": a, "b": b, **stats})
    return pd.DataFrame(rows)


def _get(table: pd.DataFrame, **where) -> pd.Series | None:
    mask = np.ones(len(table), bool)
    for key, value in where.items():
        mask &= table[key].to_numpy() == value
    return table[mask].iloc[0] if mask.any() else None


def same_spots_across_k(cells: dict) -> dict:
    """Per s: do all its cells train and score every fold on the same number of spots (the design)?"""
    sizes = {}
    for (k, s), cell in cells.items():
        r = cell["results"]
        r = r[(r["variant"] == "imagenet") & (r["probe"] == PROBE)]
        sizes.setdefault(s, {})[k] = sorted(zip(r["held_out_patient"], r["n_train"], r["n_test"]))
    return {f"s{s:g}": len({tuple(v) for v in by_k.values()}) == 1 for s, by_k in sizes.items()}


def reading(diffs: pd.DataFrame, dec: pd.DataFrame, n_folds: int) -> dict:
    """The pre-registered verdict (module docstring), with every criterion and its numbers."""
    d = diffs[diffs["probe"] == PROBE]
    out = {"probe": PROBE, "n_folds": n_folds, "positive_control": {}, "criteria": {}}
    for s in sorted(d["s"].unique()):
        k_ref = 1.0 if (d["k"] == 1.0).any() else float(d["k"].max())
        row = _get(d, s=s, k=k_ref, comparison="supervised_vs_imagenet")
        passed = (
            row is not None
            and row["mean_difference"] >= CONTROL_MARGIN
            and row["n_folds_ahead"] >= min(CONTROL_AHEAD, n_folds)
        )
        out["positive_control"][f"s{s:g}"] = {
            "k": k_ref,
            "mean": None if row is None else round(float(row["mean_difference"]), 4),
            "folds_ahead": None if row is None else int(row["n_folds_ahead"]),
            "passed": bool(passed),
        }

    def rise(variant, s):
        a, b = _get(dec, variant=variant, s=s, k=0.0), _get(dec, variant=variant, s=s, k=3.0)
        return (
            None if a is None or b is None else float(b["patient_decodability"] - a["patient_decodability"])
        )

    s = 3.0
    delta = {k: _get(d, s=s, k=k, comparison="delta") for k in KS}
    oracle = _get(d, s=s, k=3.0, comparison="oracle_vs_scvi_infonce")
    clip_rises = {f"s{x:g}": rise("clip", x) for x in sorted(dec["s"].unique())}
    c = out["criteria"]
    c["clip_decodability_rise"] = clip_rises
    c["scvi_decodability_rise_s3"] = rise("scvi_infonce", s)
    c["delta_by_k_s3"] = {
        f"k{k:g}": None if r is None else round(float(r["mean_difference"]), 4) for k, r in delta.items()
    }
    have = all(delta[k] is not None for k in KS)
    if have:
        m = {k: float(delta[k]["mean_difference"]) for k in KS}
        c["delta_rises_with_k"] = m[0.0] <= m[1.0] <= m[3.0] and m[3.0] - m[0.0] >= MONOTONE_GAP
        c["delta3_folds_ahead"] = f"{int(delta[3.0]['n_folds_ahead'])}/{int(delta[3.0]['n_folds'])}"
        c["delta3_enough_folds_ahead"] = int(delta[3.0]["n_folds_ahead"]) >= min(AHEAD_AT_3, n_folds)
        c["delta0_near_zero"] = abs(m[0.0]) <= ZERO_BAND
        c["delta3_interval"] = [round(float(delta[3.0]["ci_low"]), 4), round(float(delta[3.0]["ci_high"]), 4)]
    r3, rs = clip_rises.get("s3"), c["scvi_decodability_rise_s3"]
    c["clip_encodes_patient_s3"] = r3 is not None and r3 >= RISE
    c["scvi_does_not"] = rs is not None and rs < FLAT
    if oracle is not None:
        c["oracle_vs_scvi_k3"] = {
            "mean": round(float(oracle["mean_difference"]), 4),
            "ci": [round(float(oracle["ci_low"]), 4), round(float(oracle["ci_high"]), 4)],
        }
        c["oracle_matches_scvi"] = bool(
            oracle["ci_low"] <= 0 <= oracle["ci_high"] and abs(oracle["mean_difference"]) <= ORACLE_BAND
        )
    control = out["positive_control"].get("s3", {}).get("passed", False)
    supported_keys = [
        "delta_rises_with_k",
        "delta3_enough_folds_ahead",
        "delta0_near_zero",
        "clip_encodes_patient_s3",
        "scvi_does_not",
        "oracle_matches_scvi",
    ]
    if not control:
        verdict = "no positive control at s = 3: no reading"
    elif not any(r is not None and r >= RISE for r in clip_rises.values()):
        verdict = (
            "inconclusive: CLIP never encodes the patient; turn batch_strength beyond 3, or make part of the "
            "patient effect lie along the class markers (a confounded mode)"
        )
    elif (
        c["clip_encodes_patient_s3"]
        and delta[3.0] is not None
        and (float(delta[3.0]["mean_difference"]) <= FALSIFY_MAX or float(delta[3.0]["ci_low"]) <= 0)
    ):
        verdict = "falsified for this simulator"
    elif have and all(bool(c.get(key)) for key in supported_keys):
        verdict = "supported"
    else:
        verdict = "mixed"
    c["held"] = [key for key in supported_keys if bool(c.get(key))]
    c["did_not_hold"] = [key for key in supported_keys if not bool(c.get(key))]
    out["verdict"] = verdict
    return out


# --- figures -------------------------------------------------------------------------------------


def figures(diffs: pd.DataFrame, dec: pd.DataFrame, genes: pd.DataFrame | None = None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = diffs[(diffs["probe"] == PROBE) & (diffs["comparison"] == "delta")].sort_values("k")
    delta = go.Figure()
    for s, rows in d.groupby("s"):
        delta.add_trace(
            go.Scatter(
                x=rows["k"],
                y=rows["mean_difference"],
                mode="lines+markers",
                name=f"stain strength s = {s:g}",
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": rows["ci_high"] - rows["mean_difference"],
                    "arrayminus": rows["mean_difference"] - rows["ci_low"],
                },
            )
        )
    delta.add_hline(y=0, line_dash="dot")
    delta.update_layout(
        title="Δ(k) = macro-F1(scvi_infonce) − macro-F1(clip), paired per held-out patient, 95% t interval "
        "(simulated demo)",
        xaxis_title="batch strength k",
        yaxis_title="Δ macro-F1 (logistic probe)",
    )
    ss = sorted(dec["s"].unique())
    decod = make_subplots(rows=1, cols=len(ss), subplot_titles=[f"s = {s:g}" for s in ss], shared_yaxes=True)
    for col, s in enumerate(ss, start=1):
        for variant, rows in dec[dec["s"] == s].sort_values("k").groupby("variant"):
            decod.add_trace(
                go.Scatter(
                    x=rows["k"],
                    y=rows["patient_decodability"],
                    mode="lines+markers",
                    name=variant,
                    legendgroup=variant,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        # The gene side's targets (dashed), read by the same check, where --gene-side has run.
        if genes is not None and "patient_decodability" in genes.columns:
            targets = genes[(genes["s"] == s) & genes["patient_decodability"].notna()]
            for embedding, rows in targets.sort_values("k").groupby("embedding"):
                decod.add_trace(
                    go.Scatter(
                        x=rows["k"],
                        y=rows["patient_decodability"],
                        mode="lines+markers",
                        line={"dash": "dash"},
                        name=f"gene side: {embedding}",
                        legendgroup=f"gene_{embedding}",
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
        chance = float(dec.loc[dec["s"] == s, "chance"].mean())
        decod.add_hline(y=chance, line_dash="dot", row=1, col=col)
    decod.update_layout(
        title="Patient decodability of the image embeddings and, dashed, of the gene embeddings they are "
        "taught from (training patients, class-balanced; dotted: chance) (simulated demo)",
        yaxis_title="accuracy decoding the patient",
    )
    decod.update_xaxes(title_text="batch strength k")
    return {"delta_by_k": delta, "decodability_by_k": decod}


def write_figures(
    out: Path,
    figs: dict,
    title: str = "Batch-effect experiment",
    source: str = "benchmarks/bench_batch_effect.py; numbers in grid.csv, deltas.csv, reading.json.",
) -> None:
    """figures.json (committed) and a self-contained figures.html (not committed)."""
    (out / "figures.json").write_text(json.dumps({name: json.loads(f.to_json()) for name, f in figs.items()}))
    parts = [
        f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs.values())
    ]  # plotly.js once, inline: the page works offline
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title} (simulated)</title>"
        f"</head><body><h1>{title} (simulated demo)</h1><p>{source}</p>" + "".join(parts) + "</body></html>"
    )
    tmp = out / "figures.html.tmp"
    tmp.write_text(page)
    tmp.replace(out / "figures.html")


def summarise(out: Path, n_folds: int) -> dict:
    cells = {}
    for folder in sorted((out / "cells").glob("k*_s*")):
        if (folder / "cell.json").is_file():
            cell = _read_cell(folder)
            cells[(float(cell["info"]["k"]), float(cell["info"]["s"]))] = cell
    if not cells:
        raise SystemExit(f"no finished cell under {out / 'cells'}")
    scores = fold_scores(cells)
    dec = decodability(cells)
    diffs = deltas(scores)
    grid_table(scores, dec).to_csv(out / "grid.csv", index=False)
    diffs.to_csv(out / "deltas.csv", index=False)
    genes = gene_silhouettes(cells)
    genes.to_csv(out / "gene_silhouettes.csv", index=False)
    verdict = reading(diffs, dec, n_folds)
    verdict["same_spots_across_k"] = same_spots_across_k(cells)
    verdict["cells"] = {cell_name(k, s): c["info"] for (k, s), c in sorted(cells.items())}
    (out / "reading.json").write_text(json.dumps(verdict, indent=1, default=str))
    write_figures(out, figures(diffs, dec, genes))
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="k in {0, 3}, s = 3, 2 folds, 1 seed (smoke run)"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, help="scratch projects (default: <out>_work)")
    parser.add_argument(
        "--gene-side",
        action="store_true",
        help="re-run the gene side of finished cells that lack its per-fold table (gene patient decodability)",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only re-read the finished cells and rewrite the tables and figures",
    )
    args = parser.parse_args()
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
    name = "batch_effect_quick" if args.quick else "batch_effect_demo"
    out = (args.out or ROOT / "benchmarks" / "results" / name).resolve()
    work = (args.work or out.parent / f"{out.name}_work").resolve()
    ks, ss, seeds, folds = (
        (QUICK_KS, QUICK_SS, SEEDS[:1], QUICK_FOLDS) if args.quick else (KS, SS, SEEDS, None)
    )
    n_folds = len(folds) if folds else N_PATIENTS
    if args.gene_side:
        start = time.perf_counter()
        project = scratch_project(work / "gene_side")
        for folder in sorted((out / "cells").glob("k*_s*")):
            if (folder / "cell.json").is_file() and not (folder / f"{GENE_SIDE_TABLE}.csv").is_file():
                info = json.loads((folder / "cell.json").read_text())
                print(
                    json.dumps(rerun_gene_side(project, info["k"], info["s"], info["folds"], folder)),
                    flush=True,
                )
        print(f"gene side: {time.perf_counter() - start:.0f} s", flush=True)
    elif not args.render:
        start = time.perf_counter()
        for s in ss:
            project = scratch_project(work / f"s{s:g}")
            for k in ks:
                folder = out / "cells" / cell_name(k, s)
                if (folder / "cell.json").is_file():
                    print(f"{cell_name(k, s)}: done before, kept", flush=True)
                    continue
                info = run_cell(project, k, s, seeds, folds, folder)
                print(json.dumps(info), flush=True)
                summarise(out, n_folds)  # after every cell: an interrupted grid leaves what it finished
        print(f"grid: {time.perf_counter() - start:.0f} s", flush=True)
    verdict = summarise(out, n_folds)
    print(json.dumps({key: verdict[key] for key in ("verdict", "positive_control", "criteria")}, indent=1))


if __name__ == "__main__":
    main()
