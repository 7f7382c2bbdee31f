"""Out-of-distribution benchmark: how many objects the classifier never learnt go to
`unidentified`, and how many real cells it rejects on the way.

    python benchmarks/ood.py                                   # the shipped model
    python benchmarks/ood.py --model runs/teacher-lite0-v1/model

Objects (none is a label of the model, none was in its training data): single platelets and
platelet clumps, amorphous debris and stain precipitate (``morph.synth.render_ood_crop``, crops
with red cells around them as cut from a field), red cells cut by the image edge and pairs of
overlapping red cells cropped at their midpoint (from rendered fields). All are decoded as red
cells on Wright stain, the group a localizer most often hands such objects over as.

Columns: share sent to `unidentified` by the confidence threshold alone, by the OOD (energy)
threshold alone, by both at once, and in all; then the AUROC of the energy score and of the
confidence against the real validation cells (1.0 = fully separable, 0.5 = not at all). The
baseline row is the model's in-distribution rejection on the Chula RBC-12 validation crops (split
by image, ``split.json``). A model folder without an ``ood`` entry in ``thresholds.json`` gets one
fitted here on those same validation crops (``--max-reject``), exactly as ``training/train.py``
``finalize`` fits it; the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def chula_val_crops(clf: Any, data_dir: Path) -> np.ndarray:
    """Crops at the labelled points of the model's Chula validation images (its ``split.json``)."""
    from benchmarks import robustness

    fields = robustness.chula_val_fields(data_dir / "chula-rbc-12", robustness.val_stems(Path(clf.folder)))
    return robustness.field_crops(clf, fields, robustness.chula_labels())[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--data", default=os.environ.get("MORPH_DATA_DIR", str(REPO.parent / "shared" / "data")),
                   help="data root holding chula-rbc-12")
    p.add_argument("--n", type=int, default=200, help="crops per object type")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-reject", type=float, default=0.02,
                   help="OOD share of validation cells rejected, when the folder has no fitted OOD threshold")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)

    import torch

    from morph.classify import load_model
    from morph.evaluation import OOD_FIELD_OBJECTS, ood_object_crops, ood_rejection
    from morph.synth import OOD_OBJECTS

    torch.set_num_threads(args.threads)
    clf = load_model(args.model)
    ref = clf.logits(chula_val_crops(clf, Path(args.data)))
    fitted = "ood" not in clf.thresholds
    if fitted:
        clf.fit_ood(ref, "rbc", "wright", args.max_reject, "Chula validation crops, fitted by benchmarks/ood.py")
    rows = {"in-distribution: Chula val": ood_rejection(clf, ref)}
    for obj in OOD_OBJECTS + OOD_FIELD_OBJECTS:
        crops = ood_object_crops(clf.preprocessing, obj, args.n, args.seed)
        rows[obj] = ood_rejection(clf, clf.logits(crops), reference=ref)
    ood = clf.thresholds.get("ood") or {"per_group": {}}  # none when too few validation cells to fit one
    print(f"model {clf.name} ({clf.arch}); confidence threshold {clf.thresholds.get('global')}; OOD energy "
          f"threshold {ood['per_group'].get('rbc/wright')} (rbc/wright, "
          + ("fitted HERE: the folder has none, " if fitted else "from the folder, ")
          + f"max_reject {ood.get('max_reject')}); decoded as red cells on Wright stain")
    hdr = (f"{'objects':<28}{'n':>6}{'thresh':>9}{'OOD':>8}{'both':>8}{'unident.':>10}{'AUROC E':>9}{'AUROC conf':>11}"
           "  most often called (raw)")
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        au_e, au_c = r.get("auroc_energy"), r.get("auroc_confidence")
        print(f"{name:<28}{r['n']:>6}{r['threshold']:>9.3f}{r['ood']:>8.3f}{r['both']:>8.3f}{r['unidentified']:>10.3f}"
              + (f"{au_e:>9.3f}{au_c:>11.3f}" if au_e is not None else f"{'-':>9}{'-':>11}")
              + f"  {r['most_called']['label']} {r['most_called']['share']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": clf.name, "ood": ood, "fitted_here": fitted, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
