"""Line a window's counts up with the reference profile, bin for bin (SPEC.md section 3).

Events columns keep every bin of the reference profile, empty ones included,
plus ``__other__`` and ``__missing__`` where either window has any. Histogram
columns use the union of the labels present in either window.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from driftmon.config import SEGMENT_PSEUDO_COLUMN
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


def align_segments(profile: ReferenceProfile, segments: list[dict[str, ColumnCounts]], window: TimeRange,
                   rows_scanned: int = 0) -> WindowCounts:
    """The whole population's counts (the sum of its segments) with each segment's and the mix.

    Every segment is lined up with its own reference counts in the bins of the one
    profile; the mix compares the reference and current rows per segment.
    """
    names = [c.column for c in profile.columns]
    counts = align(profile, whole_population(segments), window, rows_scanned=rows_scanned)
    per_segment = tuple(
        align(replace(profile, columns=tuple(c.of_segment(i) for c in profile.columns), segments=None),
              found, window)
        for i, found in enumerate(segments))
    members = profile.segments
    keys = members.keys
    size = len(members.members)
    rows = [segment[names[0]].total for segment in segments]
    mix_profile = ColumnProfile(column=SEGMENT_PSEUDO_COLUMN, role="segment", kind="categorical", config_hash="",
                                labels=tuple(keys[:size]), counts=tuple(members.rows[:size]),
                                other=members.rows[size], missing=members.rows[size + 1])
    mix_current = ColumnCounts(SEGMENT_PSEUDO_COLUMN, dict(zip(keys[:size], rows[:size], strict=True)),
                               other=rows[size], missing=rows[size + 1])
    mix = align(ReferenceProfile(profile.range, (mix_profile,)), {SEGMENT_PSEUDO_COLUMN: mix_current}, window)
    return replace(counts, segments=per_segment, mix=mix, segment_profile=members)


def whole_population(segments: list[dict[str, ColumnCounts]]) -> dict[str, ColumnCounts]:
    """The whole population's counts of every column: the sum of its segments' counts."""
    if len(segments) == 1:
        return segments[0]
    return {name: ColumnCounts(name, {label: sum(s[name].counts[label] for s in segments) for label in first.counts},
                               other=sum(s[name].other for s in segments),
                               missing=sum(s[name].missing for s in segments),
                               error=next((s[name].error for s in segments if s[name].error), None))
            for name, first in segments[0].items()}
