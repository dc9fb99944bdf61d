"""Line a window's counts up with the reference profile, bin for bin (SPEC.md section 3).

Events columns keep every bin of the reference profile, empty ones included,
plus ``__other__`` and ``__missing__`` where either window has any. Histogram
columns use the union of the labels present in either window.
"""

from __future__ import annotations

import numpy as np

from driftmon.sources.profile import (
    MISSING,
    OTHER,
    ColumnCounts,
    ColumnProfile,
    ReferenceProfile,
    WindowCounts,
)
from driftmon.windows import TimeRange


def column_bins(profile: ColumnProfile, current: ColumnCounts) -> tuple[list[str], list[float], list[float]]:
    """The labels of one column's bins, with the reference and current count of each."""
    reference, observed = dict(zip(profile.labels, profile.counts, strict=True)), dict(current.counts)
    labels = list(profile.labels)
    if profile.kind == "histogram":
        labels += sorted(set(observed) - set(reference))
    for label, in_reference, in_current in (
        (OTHER, profile.other, current.other),
        (MISSING, profile.missing, current.missing),
    ):
        if in_reference > 0 or in_current > 0:
            labels.append(label)
            reference[label], observed[label] = in_reference, in_current
    return labels, [reference.get(x, 0.0) for x in labels], [observed.get(x, 0.0) for x in labels]


def align(
    profile: ReferenceProfile,
    current: dict[str, ColumnCounts],
    window: TimeRange,
    rows_scanned: int = 0,
    roles: dict[str, str] | None = None,
) -> WindowCounts:
    """Padded ``[F, B]`` reference and current counts with the mask of real bins."""
    profiles = {c.column: c for c in profile.columns}
    for name in current:
        if name not in profiles:  # a histogram feature absent from the reference
            profiles[name] = ColumnProfile(column=name, role=(roles or {}).get(name, "feature"),
                                           kind="histogram", config_hash="")
    names = list(profiles)
    rows = [column_bins(profiles[n], current.get(n) or ColumnCounts(n, {})) for n in names]
    width = max((len(labels) for labels, _, _ in rows), default=0)
    shape = (len(names), max(width, 1))
    reference, observed = np.zeros(shape), np.zeros(shape)
    mask = np.zeros(shape, dtype=bool)
    for f, (labels, ref_counts, cur_counts) in enumerate(rows):
        reference[f, : len(labels)], observed[f, : len(labels)] = ref_counts, cur_counts
        mask[f, : len(labels)] = True
    empty = [ColumnCounts(n, {}) for n in names]
    currents = [current.get(n) or blank for n, blank in zip(names, empty, strict=True)]
    return WindowCounts(
        window=window,
        columns=tuple(names),
        roles=tuple((roles or {}).get(n, profiles[n].role) for n in names),
        labels=tuple(tuple(labels) for labels, _, _ in rows),
        reference=reference,
        current=observed,
        mask=mask,
        reference_totals=np.array([profiles[n].total for n in names]),
        current_totals=np.array([c.total for c in currents]),
        # Histogram sources keep __missing__ as an ordinary label.
        current_missing=np.array([c.missing + c.counts.get(MISSING, 0.0) for c in currents]),
        errors={
            **{n: f"reference: {profiles[n].error}" for n in names if profiles[n].error},
            **{c.column: c.error for c in currents if c.error},
        },
        rows_scanned=rows_scanned,
    )
