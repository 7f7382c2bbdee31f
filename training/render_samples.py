"""Regenerate ``sample_images/``: rendered (synthetic) smear fields plus their manifest.

    python -m training.render_samples                # writes sample_images/ in the repo
    python -m training.render_samples --out /tmp/s  # somewhere else

Every picture follows from its seed and the parameters listed in ``SAMPLES``;
``manifest.json`` records them with the renderer's style, the scale (um/px) and the
ground truth of every cell, so a run of ``morph analyze sample_images/`` can be checked
against known answers. The images are JPEG (quality 90) to keep the folder small.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from morph.io import write_bytes_atomic, write_json, write_text
from morph.segment import DEFAULT_UM_PER_PX
from morph.synth import RenderStyle, render_field

REPO = Path(__file__).resolve().parents[1]
JPEG_QUALITY = 90

_NORMALISH = {"normal": 0.85, "microcyte": 0.02, "macrocyte": 0.02, "target_cell": 0.01,
              "reticulocyte": 0.015, "neutrophil": 0.012, "lymphocyte": 0.006, "platelet": 0.07}

#: name -> (seed, field_type, label_weights or None for the default mix, overlap, style overrides, what it shows)
SAMPLES: dict[str, dict[str, Any]] = {
    "blood_normal_01": dict(seed=101, field_type="blood", label_weights=_NORMALISH, overlap=0.05,
                            style={"density": 0.38},
                            about="Wright-stained blood, mostly normal discocytes, a few platelets"),
    "blood_normal_02": dict(seed=102, field_type="blood", label_weights=_NORMALISH, overlap=0.12,
                            style={"density": 0.45},
                            about="Wright-stained blood, mostly normal, denser with some overlap"),
    "blood_mixed_01": dict(seed=103, field_type="blood", label_weights=None, overlap=0.08,
                           style={"density": 0.4},
                           about="Wright-stained blood, the renderer's default mix of red-cell shapes"),
    "blood_teardrops_01": dict(seed=104, field_type="blood", overlap=0.1, style={"density": 0.38},
                               label_weights={"normal": 0.55, "teardrop": 0.22, "ovalocyte": 0.05,
                                              "microcyte": 0.05, "schistocyte": 0.03,
                                              "nucleated_rbc": 0.015, "platelet": 0.05},
                               about="Wright-stained blood with many teardrop cells (dacrocytes)"),
    "blood_megaloblastic_01": dict(seed=105, field_type="blood", overlap=0.1,
                                   style={"density": 0.38, "size_scale": {"ovalocyte": 1.3}},
                                   label_weights={"normal": 0.33, "macrocyte": 0.2, "ovalocyte": 0.25,
                                                  "teardrop": 0.05, "schistocyte": 0.03,
                                                  "hypersegmented_neutrophil": 0.035, "platelet": 0.03},
                                   about="Megaloblastic blood picture: macro-ovalocytes (labelled "
                                         "ovalocyte, 1.3x size), macrocytes, hypersegmented neutrophils"),
    # four more fields of the same megaloblastic case, so the README's demo case counts
    # enough red cells (>= 200) for the findings to be judged
    **{f"blood_megaloblastic_0{i}": dict(
        seed=105 + 100 * (i - 1), field_type="blood", overlap=0.1,
        style={"density": 0.38, "size_scale": {"ovalocyte": 1.3}},
        label_weights={"normal": 0.33, "macrocyte": 0.2, "ovalocyte": 0.25, "teardrop": 0.05,
                       "schistocyte": 0.03, "hypersegmented_neutrophil": 0.035, "platelet": 0.03},
        about=f"Megaloblastic blood picture, field {i} of the same case") for i in (2, 3, 4, 5)},
    "nmb_reticulocytes_01": dict(seed=106, field_type="nmb", label_weights=None, overlap=0.1,
                                 style={"density": 0.42},
                                 about="New methylene blue: reticulocytes with blue reticulum among "
                                       "plain red cells"),
    "marrow_megaloblastic_01": dict(seed=107, field_type="marrow", overlap=0.1,
                                    style={"density": 0.42, "size_scale": {"ovalocyte": 1.3}},
                                    label_weights={"megaloblast": 0.18, "normoblast": 0.14, "normal": 0.28,
                                                   "macrocyte": 0.12, "ovalocyte": 0.1,
                                                   "hypersegmented_neutrophil": 0.03, "other_wbc": 0.08,
                                                   "lymphocyte": 0.03, "platelet": 0.04},
                                    about="Bone marrow, megaloblastic: large cells with fine open "
                                          "chromatin next to normoblasts"),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "sample_images", help="output folder")
    p.add_argument("--um-per-px", type=float, default=DEFAULT_UM_PER_PX,
                   help="scale to render at (default: the Chula scale, morph.segment.DEFAULT_UM_PER_PX)")
    p.add_argument("--only", nargs="*", default=None, help="render only these sample names")
    return p


def sample_style(spec: dict[str, Any]) -> RenderStyle:
    """The style a sample is rendered with: the seed's random style plus the listed overrides."""
    stain = "nmb" if spec["field_type"] == "nmb" else "wright"
    return dataclasses.replace(RenderStyle.random(spec["seed"], stain), **spec.get("style", {}))


def render_sample(name: str, um_per_px: float = DEFAULT_UM_PER_PX) -> Any:
    """Render one named sample (a :class:`morph.synth.SynthField`)."""
    spec = SAMPLES[name]
    return render_field(spec["seed"], field_type=spec["field_type"], um_per_px=um_per_px,
                        label_weights=spec["label_weights"], overlap=spec["overlap"],
                        style=sample_style(spec))


def main(args: argparse.Namespace) -> int:
    names = args.only or list(SAMPLES)
    entries: list[dict[str, Any]] = []
    for name in names:
        if name not in SAMPLES:
            logging.error("unknown sample %r; known: %s", name, ", ".join(SAMPLES))
            return 2
        spec = SAMPLES[name]
        f = render_sample(name, args.um_per_px)
        buf = io.BytesIO()
        Image.fromarray(f.image).save(buf, format="JPEG", quality=JPEG_QUALITY)
        fname = f"{name}.jpg"
        write_bytes_atomic(args.out / fname, buf.getvalue())
        counts = dict(sorted(f.counts().items()))
        entries.append({
            "file": fname, "synthetic": True, "about": spec["about"], "field_type": f.field_type,
            "stain": f.stain, "seed": spec["seed"], "um_per_px": f.um_per_px,
            "width": int(f.image.shape[1]), "height": int(f.image.shape[0]),
            "overlap": spec["overlap"], "label_weights": spec["label_weights"],
            "style_overrides": spec.get("style", {}),
            "style": dataclasses.asdict(f.style) if f.style is not None else None,
            "counts": counts, "cells": [c.to_dict() for c in f.cells],
        })
        print(f"{fname:32s} {f.field_type:6s} {len(f.cells):4d} cells  {counts}")
    write_json(args.out / "manifest.json", {
        "synthetic": True,
        "generator": "morph.synth.render_field via training/render_samples.py",
        "regenerate": "python -m training.render_samples --out sample_images",
        "jpeg_quality": JPEG_QUALITY,
        "images": entries,
    })
    write_text(args.out / "MANIFEST.md", _manifest_md(entries))
    return 0


def _manifest_md(entries: list[dict[str, Any]]) -> str:
    lines = [
        "# sample_images: synthetic smear fields",
        "",
        "Every image here is **synthetic**: rendered by `morph.synth.render_field` (no patient data).",
        "They are the inputs of the README's first command and of smoke tests. Regenerate with",
        "",
        "    python -m training.render_samples --out sample_images",
        "",
        "`manifest.json` lists, per image, the seed, field type, stain, scale (micrometres per",
        "pixel), label weights, overlap, the full render style and the ground truth of every cell",
        "(centre, bbox, label, kind, diameter, touches_border). JPEG quality "
        f"{JPEG_QUALITY}, so pixels differ slightly from the in-memory render; the truth does not.",
        "",
        "| file | field | um/px | cells | what it shows |",
        "|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(f"| `{e['file']}` | {e['field_type']} ({e['stain']}) | {e['um_per_px']:g} | "
                     f"{len(e['cells'])} | {e['about']} |")
    lines += ["", "Counts per label (border-cut cells included):", ""]
    for e in entries:
        lines.append(f"- `{e['file']}`: " + ", ".join(f"{k} {v}" for k, v in e["counts"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    raise SystemExit(main(get_args_parser().parse_args()))
