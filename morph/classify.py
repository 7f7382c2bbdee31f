"""The cell classifier: crops at a fixed physical scale -> CNN -> calibrated, kind-aware labels.

A model is a folder (see :meth:`CellClassifier.save`)::

    config.json          name, version, arch + kwargs, temperature, provenance per label
    labels.json          the label list, in logit order
    preprocessing.json   crop size (px), micrometres per pixel of the crop, normalisation
    thresholds.json      tuned confidence thresholds (global and per label)
    weights.pt           the network's state dict
    metrics.json         validation metrics (optional; summarised by :meth:`info`)

Crops are cut at a fixed PHYSICAL scale: a window of ``crop_size * model_um / field_um``
field pixels around each cell centre is resized to ``crop_size``, so a macrocyte stays
bigger than a normocyte whatever the microscope. Decoding is kind-aware: one network
scores the whole vocabulary, and a red cell is decoded over the red-cell labels only,
a nucleated cell over the nucleated and marrow labels only (the other logits are
masked). Decoding is stain-aware too: a label the stated stain cannot show
(:data:`morph.labels.VISIBLE_ON`: reticulocyte on new methylene blue only) is never given,
and on a new-methylene-blue (``"nmb"``) field red cells are decoded over ``normal`` and
``reticulocyte`` only: that stain is read for reticulocytes, not for shape. Probabilities are temperature-scaled; a cell whose top probability is under
the tuned threshold is labelled ``unidentified``. So is a cell whose out-of-distribution score
(:mod:`morph.ood`: the energy of its allowed logits) is over the threshold fitted for its kind
and stain, when ``thresholds.json`` has an ``ood`` entry (folders without one behave as before).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import MorphError
from .io import write_json, write_torch
from .labels import MARROW_LABELS, NUCLEATED_LABELS, RBC_LABELS, UNIDENTIFIED, visible_on
from .model_folder import ModelFolder
from .models import cpu_state, create_model, fuse_for_inference
from .ood import fit_ood_thresholds, group_key, ood_scores, ood_threshold
from .segment import DEFAULT_UM_PER_PX
from .types import Cell

log = logging.getLogger(__name__)

#: Name of the shipped default model folder under the models directory.
DEFAULT_MODEL_NAME = "morphnet-v6"
#: Labels a network can be trained on (the vocabulary minus ``unidentified``).
MODEL_LABELS: tuple[str, ...] = RBC_LABELS + NUCLEATED_LABELS + MARROW_LABELS
#: On an NMB-stained field red cells are read for reticulocytes only.
NMB_RBC_LABELS: tuple[str, ...] = ("normal", "reticulocyte")
#: Field-pixel window cut around a cell at the Chula scale before resizing (a normal
#: red cell is ~45-50 px across there, so this keeps ~1.7 diameters of context).
DEFAULT_WINDOW_PX = 80


#: Test-time augmentation modes: the views whose logits are averaged. Red cells have no
#: preferred orientation (training already rotates and flips), so a mirrored crop is an
#: equally valid second look. ``"flips"`` (identity + horizontal flip) was the best
#: accuracy per network pass on the Chula validation split; 4 and 8 views gained nothing more.
TTA_MODES: dict[str, tuple[str, ...]] = {"none": ("identity",), "flips": ("identity", "hflip")}


def tta_logits(net: nn.Module, x: torch.Tensor, mode: str = "none") -> torch.Tensor:
    """Logits of ``net`` on a normalised ``(N, 3, H, W)`` batch, averaged over the views of ``mode``."""
    views = TTA_MODES[mode]
    y = net(x)
    if "hflip" in views:
        y = (y + net(torch.flip(x, dims=(3,)))) / 2
    return y


@dataclass(frozen=True)
class Preprocessing:
    """How a crop is made and normalised; travels with the weights.

    ``um_per_px`` is the scale of the *crop* (after resizing), so the crop covers
    ``crop_size * um_per_px`` micrometres whatever the field's own scale.
    """

    crop_size: int = 48
    um_per_px: float = 0.0  # 0 -> derived from the default field scale (see resolved())
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    #: test-time augmentation, one of :data:`TTA_MODES`: ``"flips"`` averages the logits of
    #: the crop and its mirror image (twice the network cost)
    tta: str = "none"
    #: nucleated cells (up to ~15 um) get a window this much wider, still at a fixed scale
    nucleated_scale: float = 1.6
    #: 0: crops keep the field's colours. Above 0: each channel of a field is scaled so that its
    #: glass (:func:`morph.segment.field_glass`) reads this grey level before cropping, which
    #: cancels a camera's white balance and exposure (another lab's microscope) exactly.
    glass_level: float = 0.0

    def __post_init__(self) -> None:
        if self.tta not in TTA_MODES:
            raise MorphError("bad_model", f"unknown test-time augmentation {self.tta!r}; known: {', '.join(TTA_MODES)}")
        if not 0.0 <= self.glass_level <= 255.0:
            raise MorphError("bad_model", f"glass_level must be 0 (off) or a grey level up to 255, got {self.glass_level!r}")

    def resolved(self) -> Preprocessing:
        if self.um_per_px > 0:
            return self
        um = DEFAULT_WINDOW_PX * float(DEFAULT_UM_PER_PX) / self.crop_size
        return replace(self, um_per_px=um)

    def window_px(self, field_um_per_px: float, kind: str = "rbc") -> int:
        """Side of the field window (pixels) that covers one crop of a cell of ``kind``."""
        pre = self.resolved()
        scale = pre.nucleated_scale if kind == "nucleated" else 1.0
        return max(4, int(round(pre.crop_size * pre.um_per_px * scale / float(field_um_per_px))))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self.resolved())
        d["mean"] = list(d["mean"])
        d["std"] = list(d["std"])
        d["crop_um"] = round(d["crop_size"] * d["um_per_px"], 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            crop_size=int(d["crop_size"]),
            um_per_px=float(d["um_per_px"]),
            mean=tuple(float(v) for v in d.get("mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d.get("std", (0.25, 0.25, 0.25))),  # type: ignore[arg-type]
            tta=str(d.get("tta", "none")),
            nucleated_scale=float(d.get("nucleated_scale", 1.6)),
            glass_level=float(d.get("glass_level", 0.0)),
        )


@dataclass
class Prediction:
    """Per-crop predictions. ``labels`` already hold ``unidentified`` under the confidence
    threshold or over the OOD threshold; ``raw_labels`` are the arg-max labels; ``probs`` are
    calibrated, over ``classes``; ``ood_scores`` are the energy scores of :mod:`morph.ood`
    (higher = less like the training data) and ``out_of_distribution`` says which crops were
    over their group's OOD threshold (all False for a model without one)."""

    labels: list[str]
    raw_labels: list[str]
    confidences: np.ndarray
    probs: np.ndarray
    classes: list[str] = field(default_factory=list)
    ood_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    out_of_distribution: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def top_k(self, i: int, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs[i])[:k]
        return [(self.classes[j], float(self.probs[i, j])) for j in order if self.probs[i, j] > 0]


# --------------------------------------------------------------------------------------------
# crops
# --------------------------------------------------------------------------------------------
def extract_crops(
    image: np.ndarray,
    centres: np.ndarray | Sequence[tuple[float, float]],
    field_um_per_px: float,
    preprocessing: Preprocessing,
    kinds: Sequence[str] | str = "rbc",
) -> np.ndarray:
    """Cut one crop per ``(x, y)`` centre at the model's physical scale.

    Returns ``(N, S, S, 3)`` uint8 with ``S = preprocessing.crop_size``. Nucleated
    cells get a ``nucleated_scale`` times wider window. Windows that run off the
    image are filled by reflection. With a ``glass_level``, the crops take the colours the
    field would have if its glass read that level.
    """
    pre = preprocessing.resolved()
    pts = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    s = pre.crop_size
    out = np.zeros((len(pts), s, s, 3), np.uint8)
    if len(pts) == 0:
        return out
    if image.ndim != 3 or image.shape[2] != 3:
        raise MorphError("bad_request", f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    kinds_l = [kinds] * len(pts) if isinstance(kinds, str) else list(kinds)
    wins = {k: pre.window_px(field_um_per_px, k) for k in set(kinds_l)}
    pad = max(wins.values()) + 1
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    h, w = padded.shape[:2]
    for kind, win in wins.items():
        sel = np.array([k == kind for k in kinds_l])
        half = win // 2
        xs = np.clip(np.rint(pts[sel, 0]).astype(np.int64) - half + pad, 0, w - win)
        ys = np.clip(np.rint(pts[sel, 1]).astype(np.int64) - half + pad, 0, h - win)
        windows = np.stack([padded[y : y + win, x : x + win] for x, y in zip(xs, ys, strict=True)])
        out[sel] = windows if win == s else resize_crops(windows, s)
    return balance_to_glass(out, image, pre.glass_level)


def balance_to_glass(crops: np.ndarray, field: np.ndarray, level: float) -> np.ndarray:
    """``crops`` (uint8) with each channel scaled so that the glass of ``field`` (the image they
    were cut from) reads ``level``; unchanged when ``level`` is 0. Scaling the crops, not the
    field, costs the same on a 50-megapixel field as on a small one."""
    if level <= 0 or len(crops) == 0:
        return crops
    from .segment import field_glass

    gains = (float(level) / np.maximum(field_glass(field), 1.0)).astype(np.float32)
    return np.clip(np.rint(crops.astype(np.float32) * gains), 0, 255).astype(np.uint8)


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W, 3)`` uint8 crops to ``size`` (bilinear, antialiased)."""
    out = []
    for i in range(0, len(crops), 1024):
        t = torch.from_numpy(np.ascontiguousarray(crops[i : i + 1024])).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(t.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def to_tensor(crops: np.ndarray | torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` crops -> normalised float ``(N, 3, H, W)`` (channels-last memory)."""
    t = torch.as_tensor(crops)
    t = t.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((t - mean) / std).contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------------------------
class CellClassifier:
    """A trained network with everything needed to use it: labels, preprocessing,
    temperature, thresholds, metrics and provenance.

    Args:
        net: the network (logits over ``labels``).
        labels: label names in logit order (all from the vocabulary).
        arch: registry name of the architecture; ``arch_kwargs`` rebuild it.
        temperature: divides the logits before the softmax (fitted on validation).
        thresholds: ``{"global": t, "per_class": {label: t}}``; a prediction whose
            confidence is under its label's threshold becomes ``unidentified``.
    """

    def __init__(
        self,
        net: nn.Module,
        labels: Sequence[str],
        *,
        arch: str,
        arch_kwargs: dict[str, Any] | None = None,
        preprocessing: Preprocessing | None = None,
        temperature: float = 1.0,
        thresholds: dict[str, Any] | None = None,
        name: str | None = None,
        version: str = "0.0.0",
        metrics: dict[str, Any] | None = None,
        provenance: dict[str, str] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        unknown = [lab for lab in labels if lab not in MODEL_LABELS]
        if unknown:
            raise MorphError("bad_model", f"labels not in the vocabulary: {', '.join(unknown)}")
        self.net = net.eval()
        self.labels: list[str] = list(labels)
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        self.preprocessing = (preprocessing or Preprocessing()).resolved()
        self.temperature = float(temperature)
        self.thresholds: dict[str, Any] = thresholds or {"global": 0.0, "per_class": {}}
        self.name = name or arch
        self.version = version
        self.metrics = metrics or {}
        self.provenance = provenance or {}
        self.extra_config = extra_config or {}
        self._masks: dict[tuple[str, str], np.ndarray] = {}
        self._fused: tuple[int, nn.Module] | None = None
        self.batch_size = 512
        self.folder: Path | None = None  # set when loaded from / saved to a model folder

    @property
    def inference_net(self) -> nn.Module:
        """``net`` with batch norm folded into the convolutions (built once per net)."""
        if self._fused is None or self._fused[0] != id(self.net):
            fused = fuse_for_inference(self.net).to(memory_format=torch.channels_last)
            self._fused = (id(self.net), fused)
        return self._fused[1]

    # -- description ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the report and ``GET /v1/model`` show about this model."""
        m = self.metrics
        summary: dict[str, Any] = {k: m[k] for k in ("accuracy", "macro_f1", "ece", "n_val", "teardrop_f1") if k in m}
        if "synthetic" in m:
            summary["synthetic"] = m["synthetic"]
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "labels": list(self.labels),
            "preprocessing": self.preprocessing.to_dict(),
            "temperature": round(self.temperature, 4),
            "thresholds": self.thresholds,
            "metrics": summary,
            "provenance": dict(self.provenance),
            "decoding": "kind-aware: red cells over red-cell labels, nucleated cells over nucleated "
            "and marrow labels; stain-aware: reticulocyte on NMB stain only, where red cells are "
            "read over normal/reticulocyte",
        }

    # -- decoding -------------------------------------------------------------------------
    def allowed_mask(self, kind: str, stain: str = "wright") -> np.ndarray:
        """Boolean mask over ``labels`` a cell of ``kind`` on ``stain`` may take."""
        key = (kind, stain)
        if key not in self._masks:
            if kind == "rbc":
                allowed: Sequence[str] = NMB_RBC_LABELS if stain == "nmb" else RBC_LABELS
            elif kind == "nucleated":
                allowed = NUCLEATED_LABELS + MARROW_LABELS
            else:
                allowed = self.labels
            mask = np.array([lab in allowed and visible_on(lab, stain) for lab in self.labels])
            if not mask.any():  # this model knows none of them: fall back to the kind, then all
                kind_all = RBC_LABELS if kind == "rbc" else NUCLEATED_LABELS + MARROW_LABELS
                mask = np.array([lab in kind_all for lab in self.labels])
                if not mask.any():
                    mask = np.ones(len(self.labels), bool)
            self._masks[key] = mask
        return self._masks[key]

    def threshold_for(self, label: str) -> float:
        per = self.thresholds.get("per_class") or {}
        return float(per.get(label, self.thresholds.get("global", 0.0)))

    def _rows(self, n: int, kinds: Sequence[str] | str, stains: Sequence[str] | str
              ) -> tuple[list[str], list[str], np.ndarray]:
        """Per-row kinds and stains (a single one repeated) and the (N, C) allowed-label mask."""
        kinds_l = [kinds] * n if isinstance(kinds, str) else list(kinds)
        stains_l = [stains] * n if isinstance(stains, str) else list(stains)
        mask = np.stack([self.allowed_mask(k, s) for k, s in zip(kinds_l, stains_l, strict=True)]) if n else np.zeros((0, len(self.labels)), bool)
        return kinds_l, stains_l, mask

    def fit_ood(self, logits: np.ndarray, kinds: Sequence[str] | str, stains: Sequence[str] | str,
                max_reject: float, fitted_on: str) -> dict[str, Any] | None:
        """Fit the OOD thresholds on in-distribution logits (at the current temperature) so at most
        ``max_reject`` of each kind/stain group is rejected by them, and store them as
        ``thresholds["ood"]``; returns that entry (None, and nothing stored, when no group has
        enough cells)."""
        kinds_l, stains_l, mask = self._rows(len(logits), kinds, stains)
        groups = [group_key(k, s) for k, s in zip(kinds_l, stains_l, strict=True)]
        per_group = fit_ood_thresholds(ood_scores("energy", logits, mask, self.temperature), groups, max_reject)
        if not per_group:
            return None
        entry = {"score": "energy", "per_group": per_group, "max_reject": max_reject,
                 "fitted_on": {g: f"{fitted_on}, n={groups.count(g)}" for g in per_group}}
        self.thresholds = {**self.thresholds, "ood": entry}
        return entry

    def ood(self, logits: np.ndarray, mask: np.ndarray, kinds: Sequence[str], stains: Sequence[str]
            ) -> tuple[np.ndarray, np.ndarray]:
        """OOD scores of logit rows (at the model's own temperature, the scale their thresholds
        were fitted on) and whether each is over its kind/stain group's threshold."""
        entry = self.thresholds.get("ood") or {}
        scores = ood_scores(str(entry.get("score", "energy")), logits, mask, self.temperature)
        limit = np.array([ood_threshold(entry, k, s) for k, s in zip(kinds, stains, strict=True)], dtype=float)
        return scores, ~np.isnan(limit) & (scores > np.nan_to_num(limit, nan=np.inf))

    @torch.inference_mode()
    def logits(self, crops: np.ndarray) -> np.ndarray:
        """Raw logits ``(N, C)`` for uint8 crops ``(N, S, S, 3)`` at the model's crop size."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise MorphError("bad_request", f"expected (N, H, W, 3) crops, got shape {crops.shape}")
        s = self.preprocessing.crop_size
        if crops.shape[1:3] != (s, s):
            crops = resize_crops(crops.astype(np.uint8), s)
        out = np.zeros((len(crops), len(self.labels)), np.float32)
        net = self.inference_net
        for i in range(0, len(crops), self.batch_size):
            x = to_tensor(crops[i : i + self.batch_size], self.preprocessing)
            out[i : i + len(x)] = tta_logits(net, x, self.preprocessing.tta).float().numpy()
        return out

    def decode(
        self,
        logits: np.ndarray,
        kinds: Sequence[str] | str = "rbc",
        stains: Sequence[str] | str = "wright",
        temperature: float | None = None,
    ) -> Prediction:
        """Masked, temperature-scaled softmax and thresholding of raw logits."""
        n = len(logits)
        kinds_l, stains_l, mask = self._rows(n, kinds, stains)
        t = self.temperature if temperature is None else float(temperature)
        z = np.where(mask, logits / max(t, 1e-6), -np.inf)
        z = z - z.max(axis=1, keepdims=True) if n else z
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True) if n else 1.0
        idx = p.argmax(axis=1) if n else np.zeros(0, np.int64)
        conf = p[np.arange(n), idx] if n else np.zeros(0)
        raw = [self.labels[j] for j in idx]
        scores, outside = self.ood(logits, mask, kinds_l, stains_l)
        labs = [lab if c >= self.threshold_for(lab) and not o else UNIDENTIFIED
                for lab, c, o in zip(raw, conf, outside, strict=True)]
        return Prediction(labs, raw, conf.astype(np.float64), p.astype(np.float64), list(self.labels), scores, outside)

    def predict_crops(
        self, crops: np.ndarray, kinds: Sequence[str] | str = "rbc", stains: Sequence[str] | str = "wright"
    ) -> Prediction:
        """Classify uint8 crops ``(N, H, W, 3)`` already cut at the model's scale."""
        return self.decode(self.logits(crops), kinds, stains)

    def classify_cells(
        self, image: np.ndarray, cells: list[Cell], um_per_px: float, stain: str = "wright"
    ) -> None:
        """Label every red and nucleated cell of one field in place (platelets are left as they are)."""
        todo = [c for c in cells if c.kind in ("rbc", "nucleated")]
        if not todo:
            return
        kinds = [c.kind for c in todo]
        crops = extract_crops(image, [(c.x, c.y) for c in todo], um_per_px, self.preprocessing, kinds)
        pred = self.predict_crops(crops, kinds, stain)
        for i, c in enumerate(todo):
            c.label = pred.labels[i]
            c.confidence = float(pred.confidences[i])
            c.top_labels = pred.top_k(i, 3)

    # -- persistence ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "num_classes": len(self.labels),
            "temperature": self.temperature,
            "provenance": self.provenance,
            **self.extra_config,
        }

    def save(self, folder: str | os.PathLike[str], half: bool = False) -> Path:
        """Write the model folder (config, labels, preprocessing, thresholds, weights, metrics).
        ``half`` stores floating-point weights as float16 (half the size; read back as float32)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", self.config())
        write_json(out / "labels.json", self.labels)
        write_json(out / "preprocessing.json", self.preprocessing.to_dict())
        write_json(out / "thresholds.json", self.thresholds)
        state = cpu_state(self.net)
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        write_torch(out / "weights.pt", state)
        if self.metrics:
            write_json(out / "metrics.json", self.metrics)
        self.folder = out
        return out


def load_model(path_or_name: str | os.PathLike[str] | None = None, **_: Any) -> CellClassifier:
    """Load a model folder: a path, a name under the models directory, or ``None`` for the default."""
    folder = ModelFolder.open(path_or_name, DEFAULT_MODEL_NAME, "model",
                              required=("config.json", "labels.json", "preprocessing.json", "weights.pt"))
    cfg = folder.config()
    labels = folder.read("labels.json")
    if not isinstance(labels, list) or not labels:
        raise folder.error("labels.json", "labels.json must be a non-empty list")
    try:
        pre = Preprocessing.from_dict(folder.read("preprocessing.json"))
    except (MorphError, KeyError, TypeError, ValueError) as exc:
        msg = exc.message if isinstance(exc, MorphError) else f"bad preprocessing.json ({exc!r})"
        raise folder.error("preprocessing.json", msg) from exc
    kwargs = dict(cfg.get("arch_kwargs") or {})
    net = create_model(cfg["arch"], num_classes=len(labels), **kwargs)
    folder.load_weights(net)
    net = net.to(memory_format=torch.channels_last).eval()
    known = {"name", "version", "arch", "arch_kwargs", "num_classes", "temperature", "provenance"}
    clf = CellClassifier(
        net, labels, arch=cfg["arch"], arch_kwargs=kwargs, preprocessing=pre,
        temperature=float(cfg.get("temperature", 1.0)), thresholds=folder.read_optional("thresholds.json"),
        name=str(cfg.get("name") or folder.path.name), version=str(cfg.get("version", "0.0.0")),
        metrics=folder.read_optional("metrics.json"), provenance=cfg.get("provenance") or {},
        extra_config={k: v for k, v in cfg.items() if k not in known},
    )
    clf.folder = folder.path
    return clf


def build_untrained(
    arch: str = "morphnet_tiny", seed: int = 0, labels: Sequence[str] | None = None, **arch_kwargs: Any
) -> CellClassifier:
    """A randomly initialised classifier over the whole vocabulary (for tests of callers)."""
    labels = list(labels or MODEL_LABELS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model(arch, num_classes=len(labels), **arch_kwargs)
    net = net.to(memory_format=torch.channels_last).eval()
    return CellClassifier(
        net, labels, arch=arch, arch_kwargs=arch_kwargs, name=f"{arch}-untrained", version="0.0.0",
        provenance={lab: "untrained" for lab in labels},
    )
