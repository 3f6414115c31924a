"""Benchmark: read all 36 real HER2ST sections; tile the real C2 image.

    .venv/bin/python benchmarks/bench_data_engineering.py [--her2st DIR] [--repeats 3]

Each stage runs in its own process so its peak RSS is its own. Tiling is reported as a ratio to
decoding the same JPEG alone (what any tiler must pay at least once).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from stage_process import print_stage_result, run_stage  # benchmarks/, beside this script

DEFAULT_HER2ST = Path(__file__).resolve().parents[1].parent / "shared" / "her2st"


def stage_read_all(root: Path) -> dict:
    from tpir_kedro.cohort.sources import Her2stDirectory

    t0 = time.perf_counter()
    cohort = Her2stDirectory(root).read(n_jobs=2)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "n_sections": int(cohort.obs["section"].nunique()),
        "n_spots": cohort.n_obs,
        "n_genes": cohort.n_vars,
    }


def stage_decode(image: Path) -> dict:
    from tpir_kedro.cohort.slide_image import open_slide_image

    t0 = time.perf_counter()
    with open_slide_image(image) as im:
        im.load()
    return {"seconds": time.perf_counter() - t0}


def stage_tile(root: Path, size_px: int, n_jobs: int) -> dict:
    from tpir_kedro.cohort.sources import Her2stDirectory
    from tpir_kedro.imaging.tiling import plan_tiling, write_patch_store

    cohort = Her2stDirectory(root).read(sections=["C2"])
    plan = plan_tiling(cohort, size_um=112, size_px=size_px)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = write_patch_store(plan, Path(tmp) / "store", n_jobs=n_jobs)
        seconds = time.perf_counter() - t0
        meta = store.meta["sections"]["C2"]
    return {"seconds": seconds, "n_patches": plan.n_patches, "decode_factor": meta["decode_factor"]}


def _child(args: list[str]) -> dict:
    return run_stage(__file__, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--her2st", type=Path, default=Path(os.environ.get("TPIR_HER2ST_DIR", DEFAULT_HER2ST))
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="threads cutting patches (the catalog's n_jobs)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--size-px", type=int, default=224, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.her2st.resolve()
    c2 = next((root / "ST-imgs" / "C" / "C2").glob("*.jpg"))

    if args.stage:
        result = {
            "read_all": lambda: stage_read_all(root),
            "decode": lambda: stage_decode(c2),
            "tile": lambda: stage_tile(root, args.size_px, args.jobs),
        }[args.stage]()
        print_stage_result(result)
        return

    read = _child(["--stage", "read_all", "--her2st", str(root)])
    print(
        f"read all HER2ST sections: {read['n_sections']} sections, {read['n_spots']} spots x {read['n_genes']} shared genes "
        f"in {read['seconds']:.1f} s, peak RSS {read['peak_rss_mb']:.0f} MB"
    )
    decode = min(
        (_child(["--stage", "decode", "--her2st", str(root)]) for _ in range(args.repeats)),
        key=lambda r: r["seconds"],
    )
    print(
        f"decode C2 JPEG alone ({c2.name}): {decode['seconds']:.2f} s, peak RSS {decode['peak_rss_mb']:.0f} MB"
    )
    for size_px in (224, 64):
        tile = min(
            (
                _child(
                    [
                        "--stage",
                        "tile",
                        "--her2st",
                        str(root),
                        "--size-px",
                        str(size_px),
                        "--jobs",
                        str(args.jobs),
                    ]
                )
                for _ in range(args.repeats)
            ),
            key=lambda r: r["seconds"],
        )
        print(
            f"tile C2, 112 µm -> {size_px} px: {tile['n_patches']} patches in {tile['seconds']:.2f} s "
            f"(JPEG draft 1/{tile['decode_factor']}, {args.jobs} threads), {tile['seconds'] / decode['seconds']:.2f}x decode alone, "
            f"peak RSS {tile['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
