"""Class labels of a labelled (class-conditional) run: one normalisation for every input that names a
private record's class, and :class:`LabelSet`, the classes and each record's class.

Where labels come from (:mod:`spti.data.listing`): the first-level sub-folder of an ImageFolder
(``data/<class>/*.png``, ``data.labels_from_subfolders``) or a column of a listing / metadata file
(``data.label_column``). :func:`clean_label` turns a column's value into a label name the same way for
every file format, so that ``3`` in a Parquet file, ``3.0`` in a CSV written by pandas and ``" 3"`` are the
one class ``"3"`` (and match a ``classes: {"3": ...}`` entry of the config).

The label set is public. Which classes exist is the one thing about the labels that a run does not hide:
the class names and descriptions go into the prompts, the release (``release/labels.json``, the
``label`` column of ``metadata.jsonl``) and the dataset card. A run therefore treats the set of label
names as information the user supplies (the ledger states it as a trust assumption:
:data:`spti.privacy.class_counts.LABEL_SET_ASSUMPTION`); a class
named in the config's ``classes`` that has no private image still becomes a class, so a user can state the
class list publicly instead of letting the private data decide it. How many private records each class
holds is private: those counts are only ever used through a DP estimate or replaced by a public prior
(``privacy.class_sizes``), never published. A low module: imports numpy and nothing from spti but errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spti.data.users import id_text
from spti.errors import InputError

__all__ = ["MISSING_LABEL_STRINGS", "EmptyLabel", "LabelSet", "clean_label"]

#: Strings that mean "no value" in a label column: what pandas writes for NaN / pd.NA when a table is saved as
#: text. Compared case-insensitively after stripping. Unlike user ids, "none", "null" and "n/a" stay labels:
#: "none" (no finding, no defect) is a plausible class name.
MISSING_LABEL_STRINGS = frozenset({"nan", "<na>"})

class EmptyLabel(str):
    """The value :func:`clean_label` returns for a label that is present but empty (a blank string): the
    caller reports it apart from a missing one. Compares equal to ``""``."""


def clean_label(value: Any) -> str | None:
    """A label name as a string; None when the value is missing; :class:`EmptyLabel` (``""``) when it is a
    blank string.

    Missing: None, NaN (float, numpy, Decimal), pandas' NA, the strings "nan" / "<NA>" (any case).
    Integral numbers, including integral floats, are written without a fraction (3, 3.0, np.int64(3) and
    " 3 " are the class "3"); other values are ``str(value)`` with surrounding whitespace removed. Booleans
    stay "True" / "False".
    """
    s = id_text(value)  # the same normalisation as user ids (spti.data.users)
    if s is None:
        return None
    if not s:
        return EmptyLabel("")
    if s.lower() in MISSING_LABEL_STRINGS:
        return None
    return s


@dataclass(frozen=True, eq=False)
class LabelSet:
    """The classes of a labelled run and the class of each ingested private record.

    ``names``: the label names, sorted (the ImageFolder convention: class ``i`` is ``names[i]``); PUBLIC by
    the run's stated assumption (module docstring). ``descriptions``: per class, the text the prompts use
    (``cfg.classes.get(name, name)``). ``index``: int64, one class index per ingested record, in the order
    of ``IngestResult.records``; PRIVATE (it is private data, and so is every count made from it).
    """

    names: list[str]
    index: np.ndarray
    descriptions: list[str]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.descriptions):
            raise ValueError("LabelSet: one description per class name")
        if list(self.names) != sorted(set(self.names)):
            raise ValueError("LabelSet: names must be sorted and distinct")
        idx = np.asarray(self.index)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(self.names))):
            raise ValueError("LabelSet: index must hold one class index in [0, classes) per record")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        """The number of records (rows of ``index``)."""
        return int(np.asarray(self.index).shape[0])

    @classmethod
    def from_labels(cls, labels: Sequence[str], classes: Mapping[str, str] | None = None) -> LabelSet:
        """The label set of records labelled ``labels`` (one name per record, in record order), with the
        descriptions of ``classes`` (label -> description; default: the name). Every name of ``classes``
        is a class, with or without records (module docstring: the class list can be stated publicly)."""
        classes = dict(classes or {})
        for i, lab in enumerate(labels):
            if not isinstance(lab, str) or not lab:
                raise InputError(f"record {i}: a labelled run needs a non-empty label for every image")
        names = sorted(set(labels) | {str(k) for k in classes})
        pos = {n: i for i, n in enumerate(names)}
        index = np.fromiter((pos[lab] for lab in labels), dtype=np.int64, count=len(labels))
        return cls(names=names, index=index, descriptions=[str(classes.get(n, n)) for n in names])

    def public(self) -> dict[str, list[str]]:
        """What may be published about the label set: names and descriptions (``release/labels.json``)."""
        return {"names": list(self.names), "descriptions": list(self.descriptions)}

    def private_counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The exact number (or the sum of ``weights``, one per record) of private records per class.
        PRIVATE: input to a DP mechanism only; never log, publish or put it in an error message."""
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        return np.bincount(np.asarray(self.index), weights=w, minlength=self.num_classes)

