"""Condition monitoring in the cloud: anomaly scores, ISA-18.2 alarms, webhooks and maintenance (DESIGN.md 10)."""

from zhizao.cloud.monitoring.service import MonitoringService

__all__ = ["MonitoringService"]
