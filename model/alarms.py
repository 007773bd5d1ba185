"""What a drift detector's batch update finds (shared by every detector)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Alarms:
    """What :meth:`update_many` found: the positions (in the values given) of the
    drift alarms and of the warnings, and the detector's statistic at each alarm."""

    drifts: np.ndarray
    warnings: np.ndarray
    statistics: np.ndarray
