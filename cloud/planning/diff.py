"""What a plan changes against the plan it was built from."""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["plan_diff"]

Conn = psycopg.Connection[Any]


def plan_diff(conn: Conn, base_id: int | None, plan_id: int) -> list[dict[str, Any]]:
    """What a plan changes against its base: lots moved to another line or site, retimed (> 5 min), new, dropped."""
    def lots(pid: int | None) -> dict[str, tuple[Any, ...]]:
        if pid is None:
            return {}
        return {str(r[0]): r for r in conn.execute(
            "SELECT lot_id, order_id, site_id, line_id, start_ts, end_ts, tardiness_s, order_site FROM plan_lots"
            " WHERE plan_id = %s", [pid]).fetchall()}

    old, new = lots(base_id), lots(plan_id)
    out = []
    for lot_id in sorted(set(old) | set(new)):
        a, b = old.get(lot_id), new.get(lot_id)
        item: dict[str, Any] = {"lot_id": lot_id, "order_id": (b or a)[1], "order_site": (b or a)[7]}  # type: ignore[index]
        if a is None:
            assert b is not None
            item.update(change="new", to_site=b[2], to_line=b[3], to_start=b[4].isoformat(), to_end=b[5].isoformat())
        elif b is None:
            item.update(change="dropped", from_site=a[2], from_line=a[3])
        else:
            moved = (a[2], a[3]) != (b[2], b[3])
            shift = (b[5] - a[5]).total_seconds()
            if not moved and abs(shift) <= 300:
                continue
            item.update(change="moved" if moved else "retimed", from_site=a[2], from_line=a[3], to_site=b[2],
                        to_line=b[3], from_end=a[5].isoformat(), to_end=b[5].isoformat(), shift_s=shift,
                        tardiness_before_s=a[6], tardiness_after_s=b[6])
        out.append(item)
    return out
