"""OEE service: state intervals and counters from ingested samples, incremental kernels, windows and roll-ups.

`OeeService` (cloud.oee.service) runs beside the ingest; `cloud.oee.queries` answers the API from
`oee_windows` (roll-ups by summed planned time and ideal output); `cloud.oee.calendar` turns a site's shift
calendar into planned intervals and windows.
"""

from zhizao.cloud.oee.service import OeeService

__all__ = ["OeeService"]
