"""Streaming anomaly detectors batched over tags, with one verb set: init_state, update, reference_update.

After a detector: `AnomalyLikelihood` (calibrated output in [0, 1]) and `EventDetector` (onset, peak, end).
"""

from zhizao.analytics.anomaly.base import Alarm, Detector, Scored
from zhizao.analytics.anomaly.calibrate import AnomalyLikelihood, EventDetector, Events
from zhizao.analytics.anomaly.cusum import Cusum
from zhizao.analytics.anomaly.ewma import EwmaZ
from zhizao.analytics.anomaly.multivariate import MahalanobisT2
from zhizao.analytics.anomaly.novelty import ValueNovelty
from zhizao.analytics.anomaly.pca import PcaT2Q
from zhizao.analytics.anomaly.robust import RobustZ

__all__ = [
    "Alarm", "AnomalyLikelihood", "Cusum", "Detector", "EventDetector", "Events", "EwmaZ", "MahalanobisT2",
    "PcaT2Q", "RobustZ", "Scored", "ValueNovelty",
]
