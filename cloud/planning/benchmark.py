"""Anonymised benchmarking on one common definition: a site's OEE, A, P, Q and loss mix per line kind against
the cluster's quartiles over sites (each site one value, from summed day windows), never another site's own
figures, and no quartile from fewer than `MIN_SITES` sites. Kind `all` compares every line of each site."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from zhizao.cloud.oee.queries import LOSS_FIELDS

__all__ = ["MIN_SITES", "site_benchmark"]

MIN_SITES = 3
FIGURES = ("oee", "availability", "performance", "quality")
Conn = psycopg.Connection[Any]


def _figures(planned: float, run: float, ideal: float, good_ideal: float, losses: list[float]) -> dict[str, float | None]:
    a = run / planned if planned > 0 else None
    p = min(1.0, ideal / run) if run > 0 else None
    q = good_ideal / ideal if ideal > 0 else None
    oee = a * p * q if a is not None and p is not None and q is not None else None
    total = sum(losses)
    out: dict[str, float | None] = {"oee": oee, "availability": a, "performance": p, "quality": q}
    for name, value in zip(LOSS_FIELDS, losses, strict=True):
        out[f"loss_share_{name.removesuffix('_s')}"] = value / total if total > 0 else None
    return out


def site_benchmark(conn: Conn, site: str, lo: datetime, hi: datetime) -> list[dict[str, Any]] | None:
    """Per line kind of `site` (and `all`): its figures, and the cluster's quartiles where >= MIN_SITES sites have
    the kind. None when the site is unknown."""
    if conn.execute("SELECT 1 FROM sites WHERE site_id = %s", [site]).fetchone() is None:
        return None
    loss_cols = ", ".join(f"sum(w.{c})" for c in LOSS_FIELDS.values())
    rows = conn.execute(
        "SELECT w.site_id, k.kind, sum(w.planned_s), sum(w.run_s), sum(w.ideal_s), sum(w.good_ideal_s), "
        f"{loss_cols} FROM oee_windows w JOIN plan_lines p ON p.site_id = w.site_id AND p.line_id = w.line_id"
        " CROSS JOIN LATERAL (VALUES (p.kind_id), ('all')) AS k(kind)"
        " WHERE w.kind = 'day' AND w.start_ts >= %s AND w.start_ts < %s GROUP BY w.site_id, k.kind",
        [lo, hi]).fetchall()
    by_kind: dict[str, dict[str, dict[str, float | None]]] = {}
    for r in rows:
        by_kind.setdefault(str(r[1]), {})[str(r[0])] = _figures(
            float(r[2] or 0), float(r[3] or 0), float(r[4] or 0), float(r[5] or 0), [float(x or 0) for x in r[6:]])
    own_kinds = {str(k) for (k,) in conn.execute("SELECT kind_id FROM plan_lines WHERE site_id = %s", [site]).fetchall()}
    out = []
    for kind in sorted(own_kinds | {"all"}):
        sites = by_kind.get(kind, {})
        mine = sites.get(site)
        entry: dict[str, Any] = {"kind": kind, "sites": len(sites), "site": mine, "cluster": None}
        if len(sites) >= MIN_SITES:
            cluster: dict[str, Any] = {}
            for name in next(iter(sites.values())):
                values = [v[name] for v in sites.values() if v[name] is not None]
                if len(values) >= MIN_SITES:
                    q1, q2, q3 = np.quantile(np.array(values, float), [0.25, 0.5, 0.75]).tolist()
                    cluster[name] = {"q1": q1, "median": q2, "q3": q3, "n": len(values)}
                else:
                    cluster[name] = None
            entry["cluster"] = cluster
        out.append(entry)
    return out
