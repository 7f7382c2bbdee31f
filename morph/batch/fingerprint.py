"""What makes a case's report: a SHA-256 over its inputs, options, context and models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from ..errors import MorphError
from ..io import file_sha256
from ..pipeline import AnalysisOptions
from .options import FORMAT_VERSION


def model_fingerprint(classifier: Any | None) -> dict[str, Any]:
    """Identity of a classifier: name, version and a SHA-256 over its weights."""
    if classifier is None:
        return {"name": None, "version": None, "weights_sha256": None}
    info = classifier.info() if hasattr(classifier, "info") else {}
    h = hashlib.sha256()
    net = getattr(classifier, "net", None)
    if net is not None and hasattr(net, "state_dict"):
        for k, v in sorted(net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(info, sort_keys=True, default=str).encode())
    return {"name": info.get("name"), "version": info.get("version"), "weights_sha256": h.hexdigest()}


def case_fingerprint(
    case_id: str,
    input_dir: str,
    inputs: Sequence[tuple[str, str]],
    options: AnalysisOptions,
    model: dict[str, Any],
) -> str:
    """SHA-256 over everything that determines a case's report."""
    from .. import __version__

    doc = {
        "format": FORMAT_VERSION,
        "morph": __version__,
        "case": case_id,
        "input_dir": input_dir,
        "inputs": [list(x) for x in inputs],
        # the stated scale, None when none was: with none, a field may get one estimated from its cells
        "um_per_px": options.um_per_px,
        "stain": options.stain,
        "context": options.context,
        "limits": [options.limits.max_pixels, options.limits.min_side],
        "model": model,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def hash_input(path: str) -> str:
    """The SHA-256 of one input file, or ``unreadable:<code>`` (scored later, and failed, by name)."""
    try:
        return file_sha256(path)
    except MorphError as exc:
        return f"unreadable:{exc.code}"


def morph_version() -> str:
    from .. import __version__

    return __version__
