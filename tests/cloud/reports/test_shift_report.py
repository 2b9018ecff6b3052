"""The shift report: figures equal the sums of the shift's stored windows, stops and reasons from the timeline,
CSV and PDF exports in English and Chinese, refusals that name the value, comments (operator, audited)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from tests.support.apifixtures import make_client
from tests.support.oeefixtures import MIN, Running
from tests.support.reportfixtures import (
    REASON_CODE,
    SHIFT_END,
    SHIFT_START,
    by_id,
    csv_blocks,
    pdf_text,
    window_sums,
)
from zhizao.cloud.auth import create_token
from zhizao.cloud.oee.store import dt
from zhizao.cloud.reports.pdf import FontMissing, report_pdf

START = dt(SHIFT_START).isoformat()
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


def client(r: Running, role: str, sites: str = "*") -> httpx.Client:
    token = create_token(r.db, role, sites, f"r-{role}-{sites.replace('*', 'all')}")
    return httpx.Client(base_url=r.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def report(r: Running, **params: Any) -> httpx.Response:
    return r.client.get("/api/v1/reports/shift", params={"site": "site-a", "shift_start": START, **params})


def check_figures(got: dict[str, Any], want: dict[str, float], *, one_machine: bool) -> None:
    """Every summed figure, the ratios from those sums, the six losses, counts, MTBF."""
    for key in ("all_s", "planned_s", "run_s", "ideal_s", "good_ideal_s"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    for key in ("total", "good", "stops", "failures", "microstops"):
        assert got[key] == int(want[key]), key
    assert got["availability"] == pytest.approx(want["run_s"] / want["planned_s"], rel=1e-12)
    assert got["performance"] == pytest.approx(min(1.0, want["ideal_s"] / want["run_s"]), rel=1e-12)
    q = want["good"] / want["total"] if one_machine else want["good_ideal_s"] / want["ideal_s"]
    assert got["quality"] == pytest.approx(q, rel=1e-12)
    if not one_machine:  # a group's OEE is its good output at ideal cycle time over its planned time
        assert got["oee"] == pytest.approx(want["good_ideal_s"] / want["planned_s"], rel=1e-9)
    columns = {"equipment_failure": "loss_failure_s", "setup_adjustment": "loss_setup_s",
               "idling_minor_stops": "loss_minor_s", "reduced_speed": "loss_speed_s",
               "process_defects": "loss_defect_s", "startup_rejects": "loss_startup_s"}
    for name, col in columns.items():
        assert got["losses_s"][name] == pytest.approx(want[col], rel=1e-12, abs=1e-9), name
    if want["failures"]:
        assert got["mtbf_s"] == pytest.approx(want["run_s"] / want["failures"], rel=1e-12)
    else:
        assert got["mtbf_s"] is None and got["mttr_s"] is None


def test_report_figures_are_the_sums_of_the_shift_windows(fed: Running) -> None:
    resp = report(fed)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["shift"]["name"] == "A" and body["shift"]["end"] == dt(SHIFT_END).isoformat()
    assert body["shift"]["local_start"] == "2026-11-02 08:00+08:00"
    l1, l2 = by_id(body["lines"], "l1"), by_id(body["lines"], "l2")
    check_figures(l1, window_sums(fed.db, ["m1", "m2"]), one_machine=False)
    check_figures(body["site_figures"], window_sums(fed.db, ["m1", "m2", "m3"]), one_machine=False)
    check_figures(by_id(l1["machine_list"], "m1"), window_sums(fed.db, ["m1"]), one_machine=True)
    assert l1["machines"] == 2 and body["site_figures"]["machines"] == 3
    # 420 planned minutes per machine (480 less three breaks); l2 had no failure: no MTBF, no MTTR.
    assert l1["planned_s"] == 2 * 420 * 60
    assert l2["failures"] == 0 and l2["mtbf_s"] is None and l2["mttr_s"] is None

    # Stops inside planned time, by code, with the operator's reason in place of the unspecified stop:
    # m1 20 min failure + 50 min interference (the reason), m2's failure 35 of 50 min (a break inside it).
    top = {s["code"]: s for s in l1["top_stops"]}
    assert top[180000]["seconds"] == pytest.approx((20 + 35) * 60)
    assert top[180000]["count"] == 2 and top[180000]["machines"] == ["m1", "m2"]
    assert top[REASON_CODE]["seconds"] == pytest.approx(50 * 60) and top[REASON_CODE]["with_reason"] == 1
    assert top[REASON_CODE]["name"] == "interference" and top[REASON_CODE]["name_zh"] == "干扰"
    assert top[60000]["seconds"] == pytest.approx(30 * 60) and top[60000]["name"] == "inlet jam"
    assert top[100000]["seconds"] == pytest.approx(40 * 60) and top[100000]["category"] == "setup"
    assert 40000 not in top and 150000 not in top  # no unspecified stop left, breaks are not stops
    assert [s["seconds"] for s in l1["top_stops"]] == sorted((s["seconds"] for s in l1["top_stops"]), reverse=True)
    assert l1["longest_stops"][0]["seconds"] == pytest.approx(50 * 60)
    # Repair time is the failures' whole duration, the 15 min break inside m2's failure included; the
    # equipment-failure loss counts only their planned part. MTTR = repair / failures.
    assert l1["repair_s"] == pytest.approx((20 + 50 + 50) * 60)
    assert l1["repair_s"] - l1["losses_s"]["equipment_failure"] == pytest.approx(15 * 60)
    assert l1["mttr_s"] == pytest.approx(l1["repair_s"] / l1["failures"])
    assert l1["failures"] == 3
    assert l1["material_stop_s"] == pytest.approx(30 * 60)


def test_report_for_one_line_and_in_chinese(fed: Running) -> None:
    body = report(fed, line="l2", lang="zh").json()
    assert [ln["id"] for ln in body["lines"]] == ["l2"] and "site_figures" not in body
    assert body["lines"][0]["label"] == "叶盘单元" and body["site"]["label"] == "甲工厂"
    check_figures(body["lines"][0], window_sums(fed.db, ["m3"]), one_machine=False)
    assert report(fed, line="nope").status_code == 404


def test_unknown_unfinished_and_out_of_scope_shifts_are_refused(fed: Running) -> None:
    off = dt(SHIFT_START + 60 * MIN).isoformat()
    resp = report(fed, shift_start=off)
    assert resp.status_code == 404, resp.text
    err = resp.json()["error"]
    assert err["field"] == "shift_start" and err["value"] == off
    assert off in err["message"] and "A 2026-11-02 08:00+08:00" in err["message"]
    assert "B 2026-11-02 16:00+08:00" in err["message"]
    # Local time of the site without a zone names the same shift.
    assert report(fed, shift_start="2026-11-02T08:00").json()["shift"]["start"] == START
    tomorrow = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).replace(hour=8, minute=0, second=0,
                                                                                     microsecond=0)
    resp = report(fed, shift_start=tomorrow.isoformat())
    assert resp.status_code == 409 and "not finished" in resp.json()["error"]["message"], resp.text
    assert report(fed, shift_start="yesterday").status_code == 400
    with client(fed, "viewer", "site-b") as other:
        resp = other.get("/api/v1/reports/shift", params={"site": "site-a", "shift_start": START})
        assert resp.status_code == 404
    shifts = fed.client.get("/api/v1/reports/shifts", params={"site": "site-a", "days": 3}).json()
    assert shifts and all(datetime.fromisoformat(s["end"]) <= datetime.now(UTC) for s in shifts)
    assert shifts == sorted(shifts, key=lambda s: s["start"], reverse=True)


def test_csv_parses_and_carries_the_json_figures(fed: Running) -> None:
    resp = report(fed, format="csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    blocks = csv_blocks(resp.content)
    body = report(fed).json()
    figures = {(r["level"], r["line_id"], r["machine_id"]): r for r in blocks["figures"]}
    assert set(figures) == {("site", "", ""), ("line", "l1", ""), ("line", "l2", ""), ("machine", "l1", "m1"),
                            ("machine", "l1", "m2"), ("machine", "l2", "m3")}
    l1 = by_id(body["lines"], "l1")
    row = figures[("line", "l1", "")]
    assert float(row["oee"]) == pytest.approx(l1["oee"], rel=1e-8)
    assert float(row["planned_s"]) == l1["planned_s"] and int(row["total"]) == l1["total"]
    assert float(row["loss_equipment_failure_s"]) == pytest.approx(l1["losses_s"]["equipment_failure"])
    assert float(row["mttr_s"]) == pytest.approx(l1["mttr_s"])
    stops = [s for s in blocks["stops"] if s["line_id"] == "l1"]
    assert [int(s["Code"]) for s in stops] == [s["code"] for s in l1["top_stops"]]
    zh = csv_blocks(report(fed, format="csv", lang="zh").content)
    assert zh["report"][0]["工厂"] == "甲工厂"
    assert {r["产线/设备"] for r in zh["figures"]} >= {"曲轴加工单元", "叶盘单元"}


def test_pdf_opens_in_both_languages_with_chinese_names(fed: Running) -> None:
    resp = report(fed, format="pdf", lang="zh")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/pdf" and resp.content.startswith(b"%PDF-")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "shift-report-zh.pdf").write_bytes(resp.content)
    text = pdf_text(resp.content)
    for expected in ("班次报告", "甲工厂", "曲轴加工单元", "叶盘单元", "设备故障", "干扰", "进料堵塞"):
        assert expected in text, expected
    en = pdf_text(report(fed, format="pdf", lang="en").content)
    for expected in ("Shift report", "Crank cell", "Blisk cell", "Equipment failure", "interference"):
        assert expected in en, expected


def test_comments_operator_and_up_audited_and_in_every_format(fed: Running) -> None:
    path = "/api/v1/reports/shift/comments"
    note = {"site": "site-a", "shift_start": START, "line": "l1", "text": "主轴轴承异响，已通知维修"}
    with client(fed, "viewer") as viewer:
        assert viewer.post(path, json=note).status_code == 403
    with client(fed, "operator", "site-a") as op:
        ok = op.post(path, json=note)
        assert ok.status_code == 201, ok.text
        site_note = op.post(path, json={"site": "site-a", "shift_start": START, "text": "Shift handover at 16:05"})
        assert site_note.status_code == 201
        bad = op.post(path, json={**note, "text": "   "})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "text", bad.text
        off = dt(SHIFT_START + MIN).isoformat()
        bad = op.post(path, json={**note, "shift_start": off})
        assert bad.status_code == 404 and off in bad.json()["error"]["message"]
    with client(fed, "operator", "site-b") as other:
        assert other.post(path, json=note).status_code == 404
    with psycopg.connect(fed.db) as conn:
        audit = conn.execute("SELECT actor, site_id, target, detail FROM audit_log WHERE action = 'report.comment.add'"
                             " ORDER BY id").fetchall()
    assert [(a[0], a[1], a[2]) for a in audit] == [("r-operator-site-a", "site-a", "l1"),
                                                  ("r-operator-site-a", "site-a", "site-a")]
    assert audit[0][3]["comment_id"] == ok.json()["id"]
    body = report(fed).json()
    assert [c["text"] for c in body["comments"]] == [note["text"], "Shift handover at 16:05"]
    assert [c["text"] for c in report(fed, line="l2").json()["comments"]] == ["Shift handover at 16:05"]
    assert note["text"] in pdf_text(report(fed, format="pdf", lang="zh").content)
    assert csv_blocks(report(fed, format="csv").content)["comments"][0]["Comment"] == note["text"]


def test_a_missing_cjk_font_is_named_never_a_crash(fed: Running, tmp_path: Path) -> None:
    body = report(fed, lang="zh").json()
    with pytest.raises(FontMissing, match="fonts-wqy-microhei"):
        report_pdf(body, None)
    # English without the font: the PDF core font, characters it lacks as "?".
    en = report(fed).json()
    en["comments"] = [{"id": 1, "line": None, "text": "主轴 spindle", "author": "op", "at": START,
                       "local_at": "2026-11-02 09:00+08:00"}]
    text = pdf_text(report_pdf(en, None))
    assert "Crank cell" in text and "?? spindle" in text
    # A configured font file that is not there: 503 naming the setting and the file, through the API.
    missing = tmp_path / "no-such-font.ttc"
    with make_client(fed.db, report_font=missing) as api:
        resp = api.get("/api/v1/reports/shift", headers=fed.client.headers,
                       params={"site": "site-a", "shift_start": START, "format": "pdf", "lang": "zh"})
    assert resp.status_code == 503, resp.text
    assert "ZHIZAO_REPORT_FONT" in resp.json()["error"]["message"] and str(missing) in resp.json()["error"]["message"]
