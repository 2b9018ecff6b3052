"""A batch's "latest" values: live samples and known birth values count, null birth values never do."""

from __future__ import annotations

import numpy as np

from zhizao.cloud.ingest.batch import Batch


def test_null_birth_value_does_not_replace_a_live_value() -> None:
    b = Batch()
    b.add(np.array([7, 8], np.int32), np.array([1000, 1000], np.int64), np.array([10000.0, 5.0]),
          np.zeros(2, np.bool_), np.full(2, 192, np.int16), np.ones(2, np.bool_))
    # A rebirth a moment later: tag 7 not known yet (null), tag 8 known.
    b.add_birth_values(np.array([7, 8], np.int32), np.array([2000, 2000], np.int64), np.array([np.nan, 6.0]),
                       np.array([True, False]), np.full(2, 192, np.int16))
    latest = b.latest()
    assert dict(zip(latest.tag.tolist(), latest.value.tolist(), strict=True)) == {7: 10000.0, 8: 6.0}
    assert not latest.null.any()
