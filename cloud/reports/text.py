"""Words of the shift report in English and Chinese, and the number formats both exports share."""

from __future__ import annotations

from typing import Any

from zhizao.cloud.reports.shift import Lang

__all__ = ["WORDS", "hours", "pct", "word"]

WORDS: dict[str, tuple[str, str]] = {
    "title": ("Shift report", "班次报告"),
    "site": ("Site", "工厂"),
    "line": ("Line", "产线"),
    "machine": ("Machine", "设备"),
    "shift": ("Shift", "班次"),
    "start": ("Start", "开始"),
    "end": ("End", "结束"),
    "timezone": ("Time zone", "时区"),
    "generated": ("Generated", "生成时间"),
    "whole_site": ("Whole site", "全厂"),
    "oee": ("OEE", "OEE"),
    "availability": ("Availability", "可用率"),
    "performance": ("Performance", "性能率"),
    "quality": ("Quality", "质量率"),
    "target": ("Target OEE", "目标 OEE"),
    "on_target": ("On target", "达标"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "planned_h": ("Planned time (h)", "计划生产时间（小时）"),
    "run_h": ("Run time (h)", "运行时间（小时）"),
    "total": ("Total units", "总产量"),
    "good": ("Good units", "合格品"),
    "rejects": ("Rejects", "不合格品"),
    "stops": ("Stops", "停机次数"),
    "failures": ("Failures", "故障次数"),
    "microstops": ("Microstops", "短暂停机次数"),
    "mtbf_h": ("MTBF (h)", "平均故障间隔（小时）"),
    "mttr_min": ("MTTR (min)", "平均修复时间（分钟）"),
    "repair_min": ("Repair time (min)", "维修时间（分钟）"),
    "losses": ("Six big losses (min)", "六大损失（分钟）"),
    "loss": ("Loss", "损失"),
    "minutes": ("Minutes", "分钟"),
    "loss.equipment_failure": ("Equipment failure", "设备故障"),
    "loss.setup_adjustment": ("Setup & adjustment", "换型与调整"),
    "loss.idling_minor_stops": ("Idling & minor stops", "空转与短暂停机"),
    "loss.reduced_speed": ("Reduced speed", "速度降低"),
    "loss.process_defects": ("Process defects", "过程缺陷"),
    "loss.startup_rejects": ("Startup rejects", "启动废品"),
    "loss.material_stops": ("Material stops", "物料停机"),
    "top_stops": ("Top stops", "主要停机原因"),
    "longest_stops": ("Longest stops", "最长停机"),
    "code": ("Code", "代码"),
    "reason": ("Reason", "原因"),
    "category": ("Category", "类别"),
    "count": ("Count", "次数"),
    "with_reason": ("Reason entered", "已填原因"),
    "machines": ("Machines", "设备"),
    "comments": ("Comments", "备注"),
    "author": ("Author", "作者"),
    "at": ("At", "时间"),
    "text": ("Comment", "备注内容"),
    "none": ("None.", "无。"),
    # compact column heads of the PDF's figure tables
    "col.oee": ("OEE", "OEE"),
    "col.a": ("A", "可用率"),
    "col.p": ("P", "性能率"),
    "col.q": ("Q", "质量率"),
    "col.planned": ("Planned h", "计划 h"),
    "col.run": ("Run h", "运行 h"),
    "col.total": ("Total", "总产量"),
    "col.good": ("Good", "合格品"),
    "col.stops": ("Stops", "停机"),
    "col.failures": ("Failures", "故障"),
    "col.microstops": ("Micro-stops", "短停"),
    "col.mtbf": ("MTBF h", "MTBF h"),
    "col.mttr": ("MTTR min", "MTTR 分"),
    "col.target": ("Target", "目标"),
    "no_data": ("No OEE data for this shift.", "本班次无 OEE 数据。"),
}


def word(key: str, lang: Lang) -> str:
    """The report's word for `key` in `lang`."""
    en, zh = WORDS[key]
    return zh if lang == "zh" else en


def pct(x: Any) -> str:
    """A fraction as `74.8 %`; empty when there is none."""
    return "" if x is None else f"{x * 100:.1f} %"


def hours(seconds: Any, scale: float = 3600.0, digits: int = 2) -> str:
    """Seconds in hours (or minutes with scale=60); empty when there are none."""
    return "" if seconds is None else f"{seconds / scale:.{digits}f}"
