"""A window's multivariate drift: what a run stores, prints and exports (README, "Multivariate drift")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from driftmon.windows import TimeRange

MULTIVARIATE_COLUMN = "__multivariate__"


@dataclass(frozen=True)
class MultivariateResult:
    """The reconstruction error of a window with its sampling error and band, the Gaussian KL
    with its upper threshold, and the status they give:

    - ``critical``: the reconstruction error is outside its band (NannyML's alert);
    - ``warning``: only the Gaussian KL is above its threshold;
    - ``insufficient_data``: fewer rows than ``min_samples`` in the window or the reference,
      or no threshold (a reference without two window-sized chunks to calibrate on);
    - ``ok`` otherwise.
    """

    monitor: str
    window: TimeRange
    reference: TimeRange
    rows: float
    reconstruction_error: float | None
    sampling_error: float | None
    threshold_lower: float | None
    threshold_upper: float | None
    gaussian_kl: float | None
    gaussian_kl_threshold: float | None
    status: str
    fit_key: str
    fingerprint: str
    # {"gaussian_kl": [[column, share], ...], "residuals": [[column, window, reference], ...]}
    contributions: dict = field(default_factory=dict)
    note: str | None = None  # why the status is insufficient_data, when it is

    def as_row(self, computed_at: datetime) -> dict:
        return {
            "monitor": self.monitor, "window_start": self.window.start, "window_end": self.window.end,
            "reference_start": self.reference.start, "reference_end": self.reference.end, "rows": self.rows,
            "reconstruction_error": _finite(self.reconstruction_error),
            "sampling_error": _finite(self.sampling_error),
            "threshold_lower": self.threshold_lower, "threshold_upper": self.threshold_upper,
            "gaussian_kl": _finite(self.gaussian_kl), "gaussian_kl_threshold": self.gaussian_kl_threshold,
            "status": self.status, "contributions": self.contributions, "fit_key": self.fit_key,
            "fingerprint": self.fingerprint, "computed_at": computed_at,
        }


def _finite(value: float | None) -> float | None:
    """Stored and printed as null where not finite (an infinite KL of a singular window)."""
    return value if value is not None and math.isfinite(value) else None
