"""Fits and slice sums as JSON documents for the results database, exact both ways.

Python writes a float as its shortest repr, which reads back as the same double,
so a fit read back from the store generates the same SQL constants and a slice's
sums add up to the same window sums as in the run that counted them.
"""

from __future__ import annotations

import numpy as np
import torch

from driftmon.fingerprints import fingerprint
from driftmon.multivariate.fit import CategoryEncoding, ReconstructionFit
from driftmon.multivariate.moments import Column
from driftmon.multivariate.reconstruction import WindowSums


def fit_document(fit: ReconstructionFit) -> dict:
    def floats(tensor) -> list:
        return tensor.detach().cpu().to(torch.float64).tolist()

    return {
        "columns": [[c.name, c.categorical] for c in fit.columns],
        "n_reference": fit.n_reference,
        "means": floats(fit.means), "scales": floats(fit.scales),
        "encodings": {name: {"levels": list(e.levels), "frequencies": list(e.frequencies), "mode": e.mode,
                             "unknown": e.unknown} for name, e in fit.encodings.items()},
        "correlation": floats(fit.correlation), "eigenvalues": floats(fit.eigenvalues),
        "components": floats(fit.components), "complement": floats(fit.complement),
    }


def fit_from_document(document: dict) -> ReconstructionFit:
    d = len(document["columns"])

    def tensor(values, columns: int | None = None):
        array = np.asarray(values, dtype=np.float64)
        if columns is not None:
            array = array.reshape(d, columns)
        return torch.from_numpy(array)

    kept = len(document["components"][0]) if document["components"] else 0
    return ReconstructionFit(
        columns=tuple(Column(name, bool(categorical)) for name, categorical in document["columns"]),
        n_reference=int(document["n_reference"]),
        means=tensor(document["means"]), scales=tensor(document["scales"]),
        encodings={name: CategoryEncoding(tuple(e["levels"]), tuple(float(f) for f in e["frequencies"]), e["mode"],
                                          float(e["unknown"])) for name, e in document["encodings"].items()},
        correlation=tensor(document["correlation"], d), eigenvalues=tensor(document["eigenvalues"]),
        components=tensor(document["components"], kept), complement=tensor(document["complement"], d - kept),
    )


def fit_key(document: dict) -> str:
    """What slices and results are stored under: the fit's content, so new numbers mean new slices."""
    return fingerprint(document)


def sums_document(sums: WindowSums) -> dict:
    d = len(sums.zsum)
    upper = np.triu_indices(d)
    return {"n": sums.n, "s1": sums.s1, "s2": sums.s2, "z": sums.zsum.tolist(), "zz": sums.zz[upper].tolist(),
            "rr": None if sums.rr is None else sums.rr.tolist()}


def sums_from_document(document: dict) -> WindowSums:
    zsum = np.asarray(document["z"], dtype=np.float64)
    d = len(zsum)
    zz = np.zeros((d, d))
    zz[np.triu_indices(d)] = document["zz"]
    zz = zz + np.triu(zz, 1).T
    rr = None if document.get("rr") is None else np.asarray(document["rr"], dtype=np.float64)
    return WindowSums(float(document["n"]), float(document["s1"]), float(document["s2"]), zsum, zz, rr)


def empty_sums(d: int, residuals: bool = True) -> WindowSums:
    return WindowSums(0.0, 0.0, 0.0, np.zeros(d), np.zeros((d, d)), np.zeros(d) if residuals else None)
