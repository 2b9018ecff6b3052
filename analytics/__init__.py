"""Analytics kernels: numba OEE, losses, MTBF/MTTR and anomaly detectors over arrays, with reference twins.

Everything here is a pure function (or a detector whose state is an array the caller keeps); nothing
imports another zhizao package. Call `warm_up()` once at service start.
"""

from zhizao.analytics.anomaly import (
    Alarm,
    AnomalyLikelihood,
    Cusum,
    Detector,
    EventDetector,
    EwmaZ,
    MahalanobisT2,
    PcaT2Q,
    RobustZ,
    Scored,
    ValueNovelty,
)
from zhizao.analytics.features import VibrationFeatures, reference_vibration_features, vibration_features
from zhizao.analytics.oee import (
    Category,
    OeeConfig,
    OeeResult,
    fleet_oee,
    reference_fleet_oee,
)
from zhizao.analytics.warmup import warm_up
from zhizao.analytics.windows import calendar_windows, fleet_windows, rolling_windows

DETECTORS: tuple[type[Detector], ...] = (EwmaZ, Cusum, RobustZ, MahalanobisT2, PcaT2Q, ValueNovelty)
"""Every detector we ship; the tests hold each to `zhizao.analytics.checks.check_detector`."""

__all__ = [
    "DETECTORS",
    "Alarm",
    "AnomalyLikelihood",
    "Category",
    "Cusum",
    "Detector",
    "EventDetector",
    "EwmaZ",
    "MahalanobisT2",
    "OeeConfig",
    "OeeResult",
    "PcaT2Q",
    "RobustZ",
    "Scored",
    "ValueNovelty",
    "VibrationFeatures",
    "calendar_windows",
    "fleet_oee",
    "fleet_windows",
    "reference_fleet_oee",
    "reference_vibration_features",
    "rolling_windows",
    "vibration_features",
    "warm_up",
]
