"""OEE, six big losses, stops and MTBF/MTTR for a fleet: numba kernel, reference twin, configuration."""

from zhizao.analytics.oee.api import OeeInputs, fleet_oee, prepare_oee_inputs, run_oee_kernel
from zhizao.analytics.oee.config import Category, OeeConfig
from zhizao.analytics.oee.reference import reference_fleet_oee
from zhizao.analytics.oee.result import OeeResult

__all__ = [
    "Category",
    "OeeConfig",
    "OeeInputs",
    "OeeResult",
    "fleet_oee",
    "prepare_oee_inputs",
    "reference_fleet_oee",
    "run_oee_kernel",
]
