"""Benchmark: the real C2 image as a pyramidal whole slide, tiled through tiffslide vs the JPEG through PIL.

    .venv/bin/python benchmarks/bench_whole_slide.py [--her2st DIR] [--upscale 1] [--repeats 3]

C2's full-resolution JPEG is written once as a tiled, JPEG-compressed pyramidal TIFF (levels 1, 1/2,
1/4, 1/8; its µm/px in the resolution tags), optionally upscaled first to stand in for a larger
scan (``--upscale 3``: ~0.8 gigapixels). Both sources are then tiled at C2's spots (112 µm -> 224
and -> 64 px), each in its own process so its peak RSS is its own, and the two patch stores are
compared pixel for pixel (they differ by JPEG re-compression and, off level 0, by the pyramid's
own downsampling).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from stage_process import print_stage_result, run_stage  # benchmarks/, beside this script

DEFAULT_HER2ST = Path(__file__).resolve().parents[1].parent / "shared" / "her2st"


def _c2_plan(root: Path, size_px: int, image: Path | None, scale: int):
    """C2's tiling plan, pointed at ``image`` (spot centres and µm/px scaled by ``scale``)."""
    from dataclasses import replace

    from tpir_kedro.cohort.sources import Her2stDirectory
    from tpir_kedro.imaging.tiling import plan_tiling

    plan = plan_tiling(Her2stDirectory(root).read(sections=["C2"]), size_um=112, size_px=size_px)
    (section,) = plan.sections
    if image is not None:
        section = replace(
            section,
            image_path=str(image),
            um_per_px=section.um_per_px / scale,
            centres_xy=section.centres_xy * scale,
        )
    return replace(plan, sections=(section,))


def stage_convert(root: Path, out: Path, scale: int) -> dict:
    import tifffile
    from PIL import Image

    from tpir_kedro.cohort.slide_image import open_slide_image

    plan = _c2_plan(root, 224, None, 1)
    t0 = time.perf_counter()
    with open_slide_image(plan.sections[0].image_path, max_pixels=4 * 10**9) as jpeg:
        full = jpeg.convert("RGB")
    if scale > 1:
        full = full.resize((full.width * scale, full.height * scale), Image.Resampling.BILINEAR)
    um_per_px = plan.sections[0].um_per_px / scale
    options = {
        "tile": (256, 256),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": 90},
    }
    levels = [full.reduce(f) if f > 1 else full for f in (1, 2, 4, 8)]
    with tifffile.TiffWriter(out, bigtiff=True) as tiff:
        tiff.write(
            np.asarray(levels[0]),
            subifds=3,
            resolution=(1e4 / um_per_px, 1e4 / um_per_px),
            resolutionunit="CENTIMETER",
            **options,
        )
        for level in levels[1:]:
            tiff.write(np.asarray(level), subfiletype=1, **options)
    return {
        "seconds": time.perf_counter() - t0,
        "width": full.width,
        "height": full.height,
        "mb": out.stat().st_size / 1e6,
    }


def stage_tile(root: Path, size_px: int, image: Path | None, scale: int, store: Path) -> dict:
    from tpir_kedro.imaging.tiling import write_patch_store

    plan = _c2_plan(root, size_px, image, scale)
    t0 = time.perf_counter()
    written = write_patch_store(plan, store, n_jobs=2)
    seconds = time.perf_counter() - t0
    meta = written.meta["sections"]["C2"]
    return {
        "seconds": seconds,
        "n_patches": plan.n_patches,
        "how": f"{meta['reader']} level {meta['pyramid_level']}"
        if "reader" in meta
        else f"PIL, JPEG draft 1/{meta['decode_factor']}",
    }


def stage_thumbnail(image: Path) -> dict:
    from tpir_kedro.imaging.slide_thumbnail import slide_thumbnail

    t0 = time.perf_counter()
    thumbnail = slide_thumbnail(image, 1024)
    return {"seconds": time.perf_counter() - t0, "shape": list(thumbnail.rgb.shape)}


def _child(args: list[str]) -> dict:
    return run_stage(__file__, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--her2st", type=Path, default=Path(os.environ.get("TPIR_HER2ST_DIR", DEFAULT_HER2ST))
    )
    parser.add_argument(
        "--upscale", type=int, default=1, help="enlarge C2 by this factor before writing the pyramid"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size-px", type=int, default=224, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.her2st.resolve()

    if args.stage:
        stages = {
            "convert": lambda: stage_convert(root, args.image, args.upscale),
            "tile": lambda: stage_tile(root, args.size_px, args.image, args.upscale, args.store),
            "thumbnail": lambda: stage_thumbnail(args.image),
        }
        result = stages[args.stage]()
        print_stage_result(result)
        return

    from tpir_kedro.imaging.patch_store import PatchStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slide = tmp / "C2_pyramid.tif"
        made = _child(
            [
                "--stage",
                "convert",
                "--her2st",
                str(root),
                "--image",
                str(slide),
                "--upscale",
                str(args.upscale),
            ]
        )
        print(
            f"wrote C2 (x{args.upscale}) as a pyramidal JPEG TIFF: {made['width']}x{made['height']} px, {made['mb']:.0f} MB, "
            f"{made['seconds']:.1f} s, peak RSS {made['peak_rss_mb']:.0f} MB"
        )
        jpeg = _c2_plan(root, 224, None, 1).sections[0].image_path
        for name, image in (("JPEG", Path(jpeg)), ("pyramid", slide)):
            thumb = min(
                (_child(["--stage", "thumbnail", "--image", str(image)]) for _ in range(args.repeats)),
                key=lambda r: r["seconds"],
            )
            print(
                f"thumbnail (1024 px) of the {name}: {thumb['seconds']:.2f} s, peak RSS {thumb['peak_rss_mb']:.0f} MB"
            )
        for size_px in (224, 64):
            stores, results = {}, {}
            for name, image, scale in (("JPEG", None, 1), ("pyramid", slide, args.upscale)):
                runs = []
                for i in range(args.repeats):
                    store = tmp / f"{name}_{size_px}_{i}"
                    extra = [] if image is None else ["--image", str(image), "--upscale", str(scale)]
                    runs.append(
                        _child(
                            [
                                "--stage",
                                "tile",
                                "--her2st",
                                str(root),
                                "--size-px",
                                str(size_px),
                                "--store",
                                str(store),
                                *extra,
                            ]
                        )
                    )
                stores[name], results[name] = (
                    tmp / f"{name}_{size_px}_0",
                    min(runs, key=lambda r: r["seconds"]),
                )
                r = results[name]
                print(
                    f"tile C2 {name}, 112 µm -> {size_px} px: {r['n_patches']} patches in {r['seconds']:.2f} s ({r['how']}), peak RSS {r['peak_rss_mb']:.0f} MB"
                )
            a, b = (
                np.asarray(PatchStore.open(stores[n]).patches, dtype=np.int16) for n in ("JPEG", "pyramid")
            )
            diff = np.abs(a - b)
            print(
                f"  patches differ by {diff.mean():.2f} grey levels on average (99th percentile {np.percentile(diff, 99):.0f}) of 255"
            )


if __name__ == "__main__":
    main()
