"""Streaming anomaly detectors batched over tags, with one verb set: init_state, update, reference_update."""

from zhizao.analytics.anomaly.base import Alarm, Detector, Scored
from zhizao.analytics.anomaly.cusum import Cusum
from zhizao.analytics.anomaly.ewma import EwmaZ
from zhizao.analytics.anomaly.multivariate import MahalanobisT2
from zhizao.analytics.anomaly.robust import RobustZ

__all__ = ["Alarm", "Cusum", "Detector", "EwmaZ", "MahalanobisT2", "RobustZ", "Scored"]
