"""The label vocabulary: one list, used everywhere (models, readers, findings, API).

Red-cell, nucleated-cell and marrow labels follow the issue contract exactly; the
ids are stable strings used in JSON reports and the API.
"""

from __future__ import annotations

RBC_LABELS: tuple[str, ...] = (
    "normal",
    "macrocyte",
    "microcyte",
    "spherocyte",
    "target_cell",
    "stomatocyte",
    "ovalocyte",
    "teardrop",
    "burr_cell",
    "schistocyte",
    "hypochromic",
    "elliptocyte",
    "reticulocyte",
    "sickle_cell",
    "uncategorised",
)
NUCLEATED_LABELS: tuple[str, ...] = (
    "nucleated_rbc",
    "neutrophil",
    "hypersegmented_neutrophil",
    "lymphocyte",
    "monocyte",
    "other_wbc",
)
MARROW_LABELS: tuple[str, ...] = ("normoblast", "megaloblast")

#: Given when the model's confidence is under its tuned threshold.
UNIDENTIFIED = "unidentified"
#: Given when no classifier ran (localization only).
UNCLASSIFIED = "unclassified"
#: Platelets are localised but not classified further.
PLATELET = "platelet"

ALL_LABELS: tuple[str, ...] = RBC_LABELS + NUCLEATED_LABELS + MARROW_LABELS + (UNIDENTIFIED,)

#: Cell kinds produced by localization.
CELL_KINDS: tuple[str, ...] = ("rbc", "nucleated", "platelet")

#: Chula RBC-12 class numbers -> vocabulary (the data set's README order).
CHULA_CLASSES: dict[int, str] = {
    0: "normal",
    1: "macrocyte",
    2: "microcyte",
    3: "spherocyte",
    4: "target_cell",
    5: "stomatocyte",
    6: "ovalocyte",
    7: "teardrop",
    8: "burr_cell",
    9: "schistocyte",
    10: "uncategorised",
    11: "hypochromic",
    12: "elliptocyte",
}


#: Labels that only some stains can show (every other label is visible on every stain). The
#: reticulum of a reticulocyte is precipitated RNA that only a supravital stain (new methylene
#: blue) shows; on a Wright smear the same young cell is at most polychromatic, and calling it a
#: reticulocyte there would count cells that nobody can see.
VISIBLE_ON: dict[str, tuple[str, ...]] = {"reticulocyte": ("nmb",)}


def visible_on(label: str, stain: str) -> bool:
    """Whether a smear stained with ``stain`` can show ``label`` (see :data:`VISIBLE_ON`)."""
    return stain in VISIBLE_ON.get(label, (stain,))


def kind_of(label: str) -> str:
    """Return the cell kind ("rbc", "nucleated", "platelet") a label belongs to."""
    if label in RBC_LABELS:
        return "rbc"
    if label in NUCLEATED_LABELS or label in MARROW_LABELS:
        return "nucleated"
    if label == PLATELET:
        return "platelet"
    raise ValueError(f"unknown label {label!r}; known: {', '.join(ALL_LABELS)}")


def is_known(label: str) -> bool:
    return label in ALL_LABELS or label in (UNCLASSIFIED, PLATELET)
