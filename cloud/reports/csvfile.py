"""The shift report as CSV: blocks separated by one empty line, each a header row and its rows.

Blocks: `report` (site, shift, times), `figures` (the site and every line and machine: OEE, A/P/Q, times in
seconds, counts, the six losses, MTBF/MTTR in seconds, target), `stops` (top stops per line and for the site),
`comments`. Every row's first cell is its block's name, so a spreadsheet filter on column A picks one block.
Numbers are plain (fractions for ratios, seconds for times) so the file computes; headers are in the report's
language. UTF-8 with a byte-order mark, so spreadsheets read the Chinese as Chinese.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from zhizao.cloud.reports.shift import LOSSES, Lang
from zhizao.cloud.reports.text import word

__all__ = ["FIGURE_COLUMNS", "report_csv"]

FIGURE_COLUMNS = [
    "planned_s", "run_s", "ideal_s", "good_ideal_s", "total", "good", "rejects", "availability", "performance",
    "quality", "oee", *(f"loss_{k}_s" for k in LOSSES), "stops", "failures", "microstops", "repair_s",
    "material_stop_s", "mtbf_s", "mttr_s",
]  # fmt: skip


def _num(x: Any) -> Any:
    if x is None:
        return ""
    if isinstance(x, float):
        return repr(round(x, 9))
    return x


def _figure_row(level: str, line: str, machine: str, name: str, f: dict[str, Any],
                target: dict[str, Any] | None) -> list[Any]:
    values = [f["losses_s"][_loss_key(c)] if c.startswith("loss_") else f[c] for c in FIGURE_COLUMNS]
    return ["figures", level, line, machine, name, *map(_num, values), _num(target["oee"] if target else None)]


def _loss_key(column: str) -> str:
    return column[5:-2] if column.startswith("loss_") else ""


def report_csv(report: dict[str, Any]) -> bytes:
    """The report as CSV bytes (UTF-8 with BOM)."""
    lang: Lang = report["lang"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    shift = report["shift"]
    w.writerow(["report", word("site", lang), "site_id", word("line", lang), word("shift", lang),
                word("start", lang), word("end", lang), word("timezone", lang), word("generated", lang)])
    w.writerow(["report", report["site"]["label"], report["site"]["id"], report["line"] or "", shift["name"],
                shift["local_start"], shift["local_end"], report["site"]["timezone"], report["generated_at"]])
    w.writerow([])
    w.writerow(["figures", "level", "line_id", "machine_id", word("line", lang) + "/" + word("machine", lang),
                *FIGURE_COLUMNS, "target_oee"])
    if "site_figures" in report:
        w.writerow(_figure_row("site", "", "", report["site"]["label"], report["site_figures"], None))
    for ln in report["lines"]:
        w.writerow(_figure_row("line", ln["id"], "", ln["label"], ln, ln["target"]))
        for m in ln["machine_list"]:
            w.writerow(_figure_row("machine", ln["id"], m["id"], m["name"], m, None))
    w.writerow([])
    w.writerow(["stops", "line_id", word("code", lang), word("reason", lang), "category", "seconds",
                word("count", lang), word("with_reason", lang), word("machines", lang)])
    scopes = [("", report["site_figures"]["top_stops"])] if "site_figures" in report else []
    scopes += [(ln["id"], ln["top_stops"]) for ln in report["lines"]]
    for line_id, stops in scopes:
        for s in stops:
            w.writerow(["stops", line_id, s["code"], s["label"], s["category"], _num(s["seconds"]), s["count"],
                        s["with_reason"], " ".join(s["machines"])])
    w.writerow([])
    w.writerow(["comments", "line_id", word("at", lang), word("author", lang), word("text", lang)])
    for c in report["comments"]:
        w.writerow(["comments", c["line"] or "", c["local_at"], c["author"], c["text"]])
    return out.getvalue().encode("utf-8-sig")
