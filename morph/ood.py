"""Out-of-distribution (OOD) scores: a crop unlike anything the classifier learnt (debris, stain
precipitate, a platelet or a platelet clump taken for a cell, a cell of a class it never saw)
goes to ``unidentified`` even when its softmax happens to be confident.

The score is the free energy of the logits the cell's kind and stain allow (Liu et al.,
"Energy-based out-of-distribution detection", NeurIPS 2020)::

    E(x) = -T * logsumexp(f_allowed(x) / T)

The softmax confidence only sees logit *differences*, so a crop on which every allowed label
scores low (nothing matches) can still get a confident arg-max; the energy keeps the overall
magnitude, is lower for what the network was trained on, and needs no extra network pass or
feature access (it works for every architecture of the registry). ``T`` is the model's fitted
temperature, so the score stays on the scale the threshold was fitted on.

A threshold is fitted per decoding group ``"<kind>/<stain>"`` (red cells and nucleated cells,
Wright and new methylene blue score over different label sets, hence on different scales) as a
high quantile of the score on in-distribution validation cells, so at most ``max_reject`` of
them are rejected by the OOD test on its own. A group without a fitted threshold is not tested.

In ``thresholds.json`` (optional; model folders without it behave as before)::

    "ood": {"score": "energy", "per_group": {"rbc/wright": -4.61}, "max_reject": 0.02,
            "fitted_on": {"rbc/wright": "real validation split (by image): chula-rbc-12, n=2431"}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: The OOD scores :func:`ood_scores` knows (higher = more out of distribution).
OOD_SCORES: tuple[str, ...] = ("energy",)
#: A group needs this many validation cells for its threshold to mean anything.
MIN_FIT_CELLS = 50


def group_key(kind: str, stain: str) -> str:
    """The decoding group a threshold belongs to: ``"rbc/wright"``."""
    return f"{kind}/{stain}"


def energy_scores(logits: np.ndarray, allowed: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``-T * logsumexp(logits / T)`` over the ``allowed`` (N, C) logits of each row; higher = more OOD."""
    t = max(float(temperature), 1e-6)
    n = len(logits)
    if n == 0:
        return np.zeros(0, np.float64)
    z = np.where(allowed, np.asarray(logits, np.float64) / t, -np.inf)
    top = z.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return -t * lse


def ood_scores(score: str, logits: np.ndarray, allowed: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The OOD score named ``score`` (one of :data:`OOD_SCORES`)."""
    if score != "energy":
        raise ValueError(f"unknown OOD score {score!r}; known: {', '.join(OOD_SCORES)}")
    return energy_scores(logits, allowed, temperature)


def fit_ood_thresholds(
    scores: np.ndarray, groups: Sequence[str], max_reject: float, min_cells: int = MIN_FIT_CELLS
) -> dict[str, float]:
    """Per group, the smallest threshold (rounded up to 4 decimals) such that at most
    ``max_reject`` of that group's in-distribution cells score above it. Groups with fewer than
    ``min_cells`` cells get none (too few to place a tail quantile)."""
    if not 0.0 < max_reject < 1.0:
        raise ValueError(f"max_reject must be in (0, 1), got {max_reject!r}")
    s = np.asarray(scores, np.float64)
    g = np.asarray(list(groups), dtype=object)
    out: dict[str, float] = {}
    for key in sorted(set(g.tolist())):
        sel = s[g == key]
        if len(sel) < min_cells:
            continue
        # "higher": a value that exists, with at most floor(max_reject * (n - 1)) cells above it
        t = float(np.quantile(sel, 1.0 - max_reject, method="higher"))
        out[str(key)] = math.ceil(t * 1e4) / 1e4
    return out


def ood_threshold(ood: Mapping[str, Any] | None, kind: str, stain: str) -> float | None:
    """The fitted threshold of a decoding group, or None when it is not tested."""
    if not ood:
        return None
    t = (ood.get("per_group") or {}).get(group_key(kind, stain))
    return None if t is None else float(t)
