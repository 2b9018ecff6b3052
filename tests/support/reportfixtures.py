"""Shift-report test data: one finished shift of three scripted machines with every kind of stop, and readers
for the CSV and PDF exports."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.support.oeefixtures import MIN, T0, MachineData, Running, feed, scripted
from zhizao.cloud.oee.engine import SUM_FIELDS
from zhizao.cloud.oee.store import dt

# Shift A of the fixture calendar: 08:00-16:00 Shanghai on 2026-11-02, breaks at +120 (15 min), +240 (30 min)
# and +420 (15 min).
SHIFT_START = T0
SHIFT_END = T0 + 480 * MIN
REASON_AT = T0 + 270 * MIN  # m1's unspecified stop, given the reason "interference" (200000)
REASON_CODE = 200000


@dataclass(frozen=True)
class ShiftData:
    """What was fed: the machines' scripts."""

    machines: list[MachineData]


def shift_machines() -> list[MachineData]:
    """m1, m2 (line l1) and m3 (line l2) of site-a through shift A and the first half hour of shift B."""
    m1 = scripted("site-a", "l1", "m1", [
        (60, 10000, 3400, 20), (20, 180000, 0, 0), (40, 10000, 2300, 10), (15, 150000, 0, 0),
        (30, 60000, 0, 0), (75, 10000, 4400, 30), (30, 150001, 0, 0), (50, 40000, 0, 0),
        (100, 20000, 5000, 40), (15, 150000, 0, 0), (45, 10000, 2600, 5), (30, 10000, 1700, 0),
    ], 60.0)
    # The failure from +100 to +150 spans the 10:00 break: 35 of its 50 minutes are planned time.
    m2 = scripted("site-a", "l1", "m2", [
        (100, 10000, 2800, 10), (50, 180000, 0, 0), (90, 10000, 2500, 10), (30, 150000, 0, 0),
        (40, 100000, 0, 0), (110, 10000, 3100, 20), (15, 150000, 0, 0), (45, 10000, 1300, 0), (30, 10000, 800, 0),
    ], 30.0)
    m3 = scripted("site-a", "l2", "m3", [(480, 10000, 50000, 100), (30, 10000, 3000, 0)], 120.0)
    return [m1, m2, m3]


def feed_shift(r: Running) -> ShiftData:
    """Feed the shift through the OEE service, then give m1's unspecified stop a reason through the API."""
    machines = shift_machines()
    feed(r, machines)
    resp = r.client.post("/api/v1/sites/site-a/machines/m1/stops/reason",
                         json={"start": dt(REASON_AT).isoformat(), "code": REASON_CODE})
    assert resp.status_code == 200 and resp.json()["recomputed"], resp.text
    return ShiftData(machines)


def window_sums(url: str, machines: list[str]) -> dict[str, float]:
    """The stored shift-A windows of `machines`, summed in Python (the expected report figures)."""
    cols = [f for f in SUM_FIELDS if f != "flags"]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(cols)} FROM oee_windows WHERE kind = 'shift' AND start_ts = %s"
            " AND machine_id = ANY(%s)", [dt(SHIFT_START), machines]).fetchall()
    assert len(rows) == len(machines), f"expected one shift window per machine of {machines}, got {len(rows)}"
    return {c: float(sum(float(r[i]) for r in rows)) for i, c in enumerate(cols)}


def current_shift_windows(url: str) -> datetime:
    """Shift windows of m1 and m2 (line l1) that started two hours ago, and older ones 8 h before; returns the start.

    m1: planned 3600 s, good output at ideal cycle time 1800 s (OEE 0.5); m2: 1000 s and 900 s (0.9). The line's
    OEE by sums is 2700 / 4600 = 0.587, not the mean of the two (0.7).
    """
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    rows = [("m1", 3600.0, 3000.0, 2000.0, 1800.0, 100, 90), ("m2", 1000.0, 1000.0, 950.0, 900.0, 95, 90)]
    with psycopg.connect(url) as conn:
        for m, planned, run, ideal, gi, total, good in rows:
            for w_start in (start, start - timedelta(hours=8)):
                conn.execute(
                    "INSERT INTO oee_windows (site_id, machine_id, line_id, kind, start_ts, end_ts, all_s, planned_s,"
                    " run_s, ideal_s, good_ideal_s, total, good, loss_failure_s, loss_setup_s, loss_minor_s,"
                    " loss_speed_s, loss_defect_s, loss_startup_s, stops, failures, microstops, flags) VALUES"
                    " ('site-a', %s, 'l1', 'shift', %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
                    [m, w_start, w_start + timedelta(hours=8), planned, planned if w_start == start else 10.0,
                     run, ideal, gi, total, good])
    return start


def csv_blocks(body: bytes) -> dict[str, list[dict[str, str]]]:
    """The report CSV read back: block name -> rows as dicts keyed by the block's header."""
    text = body.decode("utf-8-sig")
    blocks: dict[str, list[dict[str, str]]] = {}
    for chunk in text.strip("\r\n").split("\r\n\r\n"):
        rows = list(csv.reader(io.StringIO(chunk)))
        head, *data = rows
        assert all(r[0] == head[0] for r in data), f"block {head[0]}: a row of another block"
        blocks[head[0]] = [dict(zip(head, r, strict=True)) for r in data]
    return blocks


def pdf_text(body: bytes) -> str:
    """All text of a PDF, read with pypdf (an independent reader)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(body))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def by_id(items: list[dict[str, Any]], ident: str) -> dict[str, Any]:
    """The item of a report list with `id` == ident."""
    return next(x for x in items if x["id"] == ident)
