"""Streaming anomaly detectors batched over tags, with one verb set: init_state, update, reference_update."""

from analytics.anomaly.base import Alarm, Detector, Scored
from analytics.anomaly.cusum import Cusum
from analytics.anomaly.ewma import EwmaZ
from analytics.anomaly.multivariate import MahalanobisT2
from analytics.anomaly.robust import RobustZ

__all__ = ["Alarm", "Cusum", "Detector", "EwmaZ", "MahalanobisT2", "RobustZ", "Scored"]
