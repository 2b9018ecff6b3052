"""`warm_up()`: load (or compile, the first time) every kernel on tiny inputs, off the service's hot path."""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)


def warm_up() -> float:
    """Run every kernel once on tiny inputs; returns the seconds it took (compiled code is cached on disk)."""
    from zhizao.analytics.anomaly import (
        AnomalyLikelihood,
        Cusum,
        EventDetector,
        EwmaZ,
        MahalanobisT2,
        PcaT2Q,
        RobustZ,
        ValueNovelty,
    )
    from zhizao.analytics.features import vibration_features
    from zhizao.analytics.oee import fleet_oee

    start = time.perf_counter()
    fleet_oee(
        state_offsets=[0, 2], state_time=[0, 60_000], state_code=[10000, 180000],
        count_offsets=[0, 2], count_time=[0, 120_000], count_total=[0, 10], count_good=[0, 9],
        rate_offsets=[0, 1], rate_time=[0], rate_per_min=[10.0],
        plan_offsets=[0, 1], plan_start=[0], plan_end=[120_000],
        window_offsets=[0, 1], window_start=[0], window_end=[120_000],
    )
    x = np.zeros((8, 6))
    for det in (EwmaZ(), Cusum(), RobustZ(window=4), MahalanobisT2(dims=3), PcaT2Q(dims=3, lags=1, learn=4),
                ValueNovelty()):
        det.update(det.init_state(6), x)
    lik, ev = AnomalyLikelihood(learn=2), EventDetector()
    ev.update(ev.init_state(6), lik.update(lik.init_state(6), x))
    vibration_features(x, 4)
    took = time.perf_counter() - start
    log.info("analytics kernels warm in %.2f s", took)
    return took
