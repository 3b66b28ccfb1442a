"""Class lists of every protocol and the label maps onto them (one place for these facts).

Sources: MOEXT.md / DATASETS.md (the paper's class sets and the MEGC 2019 composite).
Every loader, trainer, engine and the live path import the names from here.
"""
from __future__ import annotations

CASME2_5 = ("happiness", "disgust", "repression", "surprise", "others")
SAMM_5 = ("anger", "contempt", "happiness", "surprise", "other")
CASME3_3 = ("positive", "negative", "surprise")
COMPOSITE_3 = ("negative", "positive", "surprise")
# The synthetic demo data uses the composite's three classes.
DEMO_3 = COMPOSITE_3

PROTOCOLS: dict[str, tuple[str, ...]] = {
    "casme2": CASME2_5,
    "samm": SAMM_5,
    "casme3": CASME3_3,
    "composite": COMPOSITE_3,
    "demo": DEMO_3,
}


def _norm(label: str) -> str:
    return " ".join(str(label).strip().lower().replace("_", " ").split())


# Raw emotion label (as the releases spell it, normalised by _norm) -> class, per protocol.
# A label mapped to None is dropped by the protocol (reported, never silent).
CASME2_TO_5 = {
    "happiness": "happiness", "disgust": "disgust", "repression": "repression",
    "surprise": "surprise", "others": "others", "other": "others",
    "fear": None, "sadness": None,
}
SAMM_TO_5 = {
    "anger": "anger", "contempt": "contempt", "happiness": "happiness",
    "surprise": "surprise", "other": "other", "others": "other",
    "disgust": None, "fear": None, "sadness": None,
}
CASME3_TO_3 = {
    "happy": "positive", "happiness": "positive",
    "disgust": "negative", "fear": "negative", "anger": "negative", "sad": "negative",
    "sadness": "negative", "surprise": "surprise", "others": None, "other": None,
}
# MEGC 2019 composite: per source dataset.
COMPOSITE_FROM = {
    "casme2": {
        "happiness": "positive", "surprise": "surprise", "disgust": "negative",
        "repression": "negative", "fear": None, "sadness": None, "others": None, "other": None,
    },
    "samm": {
        "happiness": "positive", "surprise": "surprise", "anger": "negative",
        "contempt": "negative", "disgust": "negative", "fear": "negative",
        "sadness": "negative", "other": None, "others": None,
    },
    "smic": {"positive": "positive", "negative": "negative", "surprise": "surprise"},
    "casme3": {k: v for k, v in CASME3_TO_3.items()},
}
# Published per-dataset composite counts (DATASETS.md): the check for full releases.
COMPOSITE_COUNTS = {
    "casme2": {"samples": 145, "subjects": 24, "negative": 88, "positive": 32, "surprise": 25},
    "samm": {"samples": 133, "subjects": 28, "negative": 92, "positive": 26, "surprise": 15},
    "smic": {"samples": 164, "subjects": 16, "negative": 70, "positive": 51, "surprise": 43},
}


class UnknownLabelError(ValueError):
    """A raw label that no entry of a protocol's map covers."""


def map_label(raw: str, table: dict[str, str | None], *, where: str = "") -> str | None:
    """Map a raw label with ``table``; None means "dropped by this protocol"."""
    key = _norm(raw)
    if key not in table:
        known = ", ".join(sorted(table))
        raise UnknownLabelError(
            f"{where}: unknown emotion label {raw!r}; expected one of: {known}".lstrip(": ")
        )
    return table[key]


def class_index(classes: tuple[str, ...], name: str) -> int:
    try:
        return classes.index(name)
    except ValueError:
        raise ValueError(f"class {name!r} is not in {classes}") from None
