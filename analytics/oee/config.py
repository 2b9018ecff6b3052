"""State classification for OEE: which state codes are run time, which stops, which planned (excluded) time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

# Codes are UMH-compatible ranges of 10000 (DESIGN.md section 4); anything at or above this is invalid.
MAX_STATE_CODE = 230_000


class Category(IntEnum):
    """What a state's time counts as; the column order of `OeeResult.time_s`."""

    RUNNING = 0  # run time at full speed
    REDUCED_SPEED = 1  # run time; the loss shows up in performance
    MICROSTOP = 2  # short stop: stays in run time, counted as "idling and minor stops"
    FAILURE = 3  # technical unplanned stop; counts as a failure for MTBF/MTTR
    SETUP = 4  # changeover, cleaning, emptying, setting up: "setup and adjustments"
    MATERIAL = 5  # jams, congestion, material missing
    OPERATOR = 6  # operator not at the machine
    UNSPECIFIED = 7  # a stop without a reason
    UNKNOWN = 8  # unknown state (time before the first state change is excluded, as planned)
    PLANNED = 9  # planned stop (break, no shift, no order, planned maintenance): excluded from OEE


N_CATEGORIES = len(Category)

# Default role of each 10000-range (code // 10000), following DESIGN.md section 4.
_DEFAULT_RANGES: dict[int, Category] = {
    0: Category.UNKNOWN,  # legacy codes below 10000 are not interpreted
    1: Category.RUNNING,
    2: Category.REDUCED_SPEED,
    3: Category.UNKNOWN,
    4: Category.UNSPECIFIED,
    5: Category.MICROSTOP,
    6: Category.MATERIAL,
    7: Category.MATERIAL,
    8: Category.MATERIAL,
    9: Category.MATERIAL,
    10: Category.SETUP,
    11: Category.SETUP,
    12: Category.SETUP,
    13: Category.SETUP,
    14: Category.OPERATOR,
    15: Category.PLANNED,  # operator break
    16: Category.PLANNED,  # no shift
    17: Category.PLANNED,  # no order
    18: Category.FAILURE,  # equipment failure
    19: Category.FAILURE,  # external failure
    20: Category.FAILURE,  # external interference
    21: Category.PLANNED,  # preventive maintenance
    22: Category.FAILURE,  # technical other stop
}


def _default_ranges() -> dict[int, Category]:
    return dict(_DEFAULT_RANGES)


@dataclass(frozen=True)
class OeeConfig:
    """Per-site OEE configuration: state classification, microstop threshold, startup window, counter width.

    `ranges` maps a code's 10000-range (code // 10000, 0..22) to its category; `overrides` maps exact codes
    (e.g. a sub-code 180001) to a category and wins over the range. A stop (a run of consecutive stop
    states) shorter than `microstop_s` counts as a microstop. Rejects counted within `startup_s` seconds
    after a restart count as startup rejects. `counter_modulus` is the counter's wrap value (2**31 for
    PackML Int32 counters); 0 means counters never wrap and any decrease is a reset. Material stops
    (jams, congestion, material missing) are a loss class of their own; `material_in_run` keeps their time
    in run time (a site that counts them as performance losses), else they cut run time like failures.
    """

    ranges: Mapping[int, Category] = field(default_factory=_default_ranges)
    overrides: Mapping[int, Category] = field(default_factory=dict)
    microstop_s: float = 120.0
    startup_s: float = 0.0
    counter_modulus: int = 0
    material_in_run: bool = False

    def __post_init__(self) -> None:
        for key, cat in [*self.ranges.items(), *self.overrides.items()]:
            if not isinstance(cat, Category):
                raise ValueError(f"category for code {key}: {cat!r} is not an analytics.Category")
        for key in self.ranges:
            if not 0 <= key < MAX_STATE_CODE // 10_000:
                raise ValueError(f"ranges: key {key} is not a 10000-range index in 0..22")
        missing = sorted(set(range(MAX_STATE_CODE // 10_000)) - set(self.ranges))
        if missing:
            raise ValueError(f"ranges: no category for ranges {missing}")
        for code in self.overrides:
            if not 0 <= code < MAX_STATE_CODE:
                raise ValueError(f"overrides: code {code} outside 0..{MAX_STATE_CODE - 1}")
        if not (self.microstop_s >= 0 and np.isfinite(self.microstop_s)):
            raise ValueError(f"microstop_s: must be a finite number >= 0, got {self.microstop_s}")
        if not (self.startup_s >= 0 and np.isfinite(self.startup_s)):
            raise ValueError(f"startup_s: must be a finite number >= 0, got {self.startup_s}")
        if self.counter_modulus < 0:
            raise ValueError(f"counter_modulus: must be >= 0, got {self.counter_modulus}")

    def category_of(self, code: int) -> Category:
        """The category of one state code."""
        if code in self.overrides:
            return self.overrides[code]
        return self.ranges[code // 10_000]

    def tables(self) -> tuple[NDArray[np.int8], NDArray[np.int64], NDArray[np.int8]]:
        """Arrays for the kernel: category per range, sorted override codes, their categories."""
        ranges = np.array([int(self.ranges[i]) for i in range(MAX_STATE_CODE // 10_000)], dtype=np.int8)
        codes = np.array(sorted(self.overrides), dtype=np.int64)
        cats = np.array([int(self.overrides[int(c)]) for c in codes], dtype=np.int8)
        return ranges, codes, cats
