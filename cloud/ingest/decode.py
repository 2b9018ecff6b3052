"""One DATA/BIRTH payload -> validated sample arrays (alias -> tag id per node), the samples held in quarantine
(known tag, refused value or time) and the verdicts behind them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from zhizao.broker.contract.quality import QUALITY_GOOD
from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.sparkplug.codec import Decoded
from zhizao.broker.sparkplug.datatypes import NUMERIC_TYPES, TEXT_TYPES, DataType
from zhizao.broker.sparkplug.typed import ARRAY_TYPES, MAX_DATETIME_MS, iso_ms
from zhizao.cloud.host.session import NodeSession

# Earliest timestamp accepted: anything before 2000-01-01 is a clock that was never set.
MIN_TS_MS = 946_684_800_000
# Why a sample of a known tag is held in quarantine (index = the code stored with it).
QUARANTINE_REASONS = ("non_finite", "future_timestamp", "bad_timestamp", "wrong_datatype", "out_of_range")

# What a value must be to fit the datatype its tag was born with (Sparkplug 3.0 "Datatype Details"): integer
# types hold whole numbers in their range, Boolean 0 or 1, Float what a float32 can hold; text types hold text
# and numeric types numbers, array types arrays ("wrong_datatype" otherwise). Values travel as float64 (64-bit
# integers beyond 2**53 also exactly, in `Decoded.exact`), so the 64-bit bounds are their nearest float64; a DateTime
# must be an instant of the years 1970..9999. The re-ingest route checks the same table in SQL (`fits_sql`).
INTEGER_RANGES: dict[int, tuple[float, float]] = {
    DataType.Int8: (-(2.0**7), 2.0**7 - 1), DataType.Int16: (-(2.0**15), 2.0**15 - 1),
    DataType.Int32: (-(2.0**31), 2.0**31 - 1), DataType.Int64: (-(2.0**63), 2.0**63),
    DataType.UInt8: (0.0, 2.0**8 - 1), DataType.UInt16: (0.0, 2.0**16 - 1), DataType.UInt32: (0.0, 2.0**32 - 1),
    DataType.UInt64: (0.0, 2.0**64), DataType.DateTime: (0.0, float(MAX_DATETIME_MS)), DataType.Boolean: (0.0, 1.0),
}  # fmt: skip
FLOAT32_MAX = 3.4028234663852886e38
_TEXT_CODES = np.array(sorted(int(t) for t in TEXT_TYPES), np.uint32)
_NUMERIC_CODES = np.array(sorted(int(t) for t in NUMERIC_TYPES), np.uint32)
_ARRAY_CODES = np.array(sorted(int(t) for t in ARRAY_TYPES), np.uint32)

# Node metrics that describe the edge node's own health (matched on a normalised name suffix, so
# `Outbox/Depth`, `zhizao/OutboxDepth` or `outbox_depth` all work).
HEALTH_FIELDS: dict[str, tuple[str, ...]] = {
    "outbox_depth": ("outboxdepth", "outboxsamples"),
    "samples_per_s": ("samplespers", "samplespersecond", "samplesps", "samplerate"),
    "reconnects": ("reconnects", "reconnectcount"),
}
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def health_field(name: str) -> str | None:
    """Which health figure a node metric name reports, if any."""
    norm = _NOT_ALNUM.sub("", name.lower())
    for fieldname, suffixes in HEALTH_FIELDS.items():
        if norm.endswith(suffixes):
            return fieldname
    return None


def is_control_metric(name: str) -> bool:
    """Protocol metrics that are not stored as time series."""
    return name == "bdSeq" or name == BATCH_METRIC or name.startswith("Node Control/")


@dataclass
class Verdict:
    """The samples of one message split into what gets stored and what gets refused (with reasons)."""

    tag: npt.NDArray[np.int32]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    null: npt.NDArray[np.bool_]
    quality: npt.NDArray[np.int16]
    live: npt.NDArray[np.bool_]
    text_rows: list[tuple[int, int, str, int, bool]] = field(default_factory=list)  # text, arrays, DateTime
    exact_rows: list[tuple[int, int, int, int, bool]] = field(default_factory=list)  # 64-bit ints beyond 2**53
    rejected: dict[str, str] = field(default_factory=dict)  # reason -> detail
    batch_id: int | None = None
    health: dict[str, float] = field(default_factory=dict)
    total: int = 0
    held: Held | None = None  # refused samples of known tags, kept whole for re-ingest


class Columns(NamedTuple):
    """Numeric samples as parallel arrays (of a message's held samples, or of a whole DB batch)."""

    tag: npt.NDArray[np.int32]
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    null: npt.NDArray[np.bool_]
    quality: npt.NDArray[np.int16]
    live: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Held:
    """Refused samples of known tags (numeric and text), with the reason code of each (QUARANTINE_REASONS)."""

    samples: Columns
    reason: npt.NDArray[np.int8]
    text: tuple[str | None, ...]  # the text value per held sample (None for numeric ones)


def _example(d: Decoded, mask: npt.NDArray[np.bool_], what: str) -> str:
    idx = np.flatnonzero(mask)
    i = int(idx[0])
    ident = f"alias {int(d.alias[i])}" if d.has_alias[i] else f"name {d.names[i]!r}"
    value = d.text[i] if i in d.text else float(d.value[i])
    return (
        f"{len(idx)} of {d.n} samples refused ({what}); first: {ident} datatype={int(d.datatype[i])} "
        f"value={value!r} ts_ms={int(d.ts_ms[i])}"
    )


def misfits(
    value: npt.NDArray[np.float64], is_text: npt.NDArray[np.bool_], declared: npt.NDArray[np.uint32],
    is_array: npt.NDArray[np.bool_] | None = None, is_bytes: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(wrong_datatype, out_of_range) masks of samples against the datatypes their tags were born with.

    `is_array` marks values that came as `bytes_value` (arrays, Bytes), `is_bytes` those of them sent as Bytes:
    a Bytes tag takes only Bytes, an array tag only arrays. Null values fit every datatype; NaN/Inf are judged
    elsewhere (quality decides), so they are not flagged here; datatypes the ingest does not store (Unknown,
    DataSet, File...) are not checked."""
    is_array = np.zeros(len(value), np.bool_) if is_array is None else is_array
    is_bytes = np.zeros(len(value), np.bool_) if is_bytes is None else is_bytes
    text_tag = np.isin(declared, _TEXT_CODES)
    numeric_tag = np.isin(declared, _NUMERIC_CODES)
    array_tag = np.isin(declared, _ARRAY_CODES)
    bytes_tag = declared == DataType.Bytes
    wrong = ((text_tag & ~is_text) | (numeric_tag & (is_text | is_array)) | (array_tag & (~is_array | is_bytes))
             | (is_array & ~array_tag & ~bytes_tag) | (bytes_tag & ~is_bytes))
    finite = np.isfinite(value) & ~is_text & ~is_array & numeric_tag
    out = np.zeros(len(value), np.bool_)
    if finite.any():
        v = np.where(finite, value, 0.0)
        for code, (lo, hi) in INTEGER_RANGES.items():
            m = finite & (declared == code)
            if m.any():
                out |= m & ((v != np.floor(v)) | (v < lo) | (v > hi))
        out |= finite & (declared == DataType.Float) & (np.abs(v) > FLOAT32_MAX)
    return wrong, out


_BASE64 = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"  # a Bytes value's canonical text


def fits_sql(value: str, text: str, datatype: str) -> str:
    """SQL: true when a held sample (`value` float8 or `text`) fits `datatype` by the rules of `misfits` (a
    64-bit integer beyond 2**53 is held with its exact decimal text)."""
    text_codes = ", ".join(str(int(t)) for t in _TEXT_CODES)
    numeric_codes = ", ".join(str(int(t)) for t in _NUMERIC_CODES)
    array_codes = ", ".join(str(int(t)) for t in _ARRAY_CODES)
    ranges = " ".join(
        f"WHEN {datatype} = {code} THEN {value} = trunc({value}) AND {value} BETWEEN {lo!r} AND {hi!r}"
        for code, (lo, hi) in INTEGER_RANGES.items()
    )
    # only beyond 2**53 (what the ingest holds as text): the text "123" sent into an Int64 tag stays refused;
    # a CASE, since SQL does not promise to test the pattern before it casts
    lo = f"CASE WHEN {datatype} = {int(DataType.Int64)} THEN -(2::numeric ^ 63) ELSE 0 END"
    hi = f"CASE WHEN {datatype} = {int(DataType.Int64)} THEN 2::numeric ^ 63 - 1 ELSE 2::numeric ^ 64 - 1 END"
    exact = (f"{datatype} IN ({int(DataType.Int64)}, {int(DataType.UInt64)}) AND CASE WHEN {text} ~ '^-?[0-9]{{1,20}}$'"
             f" THEN abs({text}::numeric) > 2::numeric ^ 53 AND {text}::numeric BETWEEN {lo} AND {hi} ELSE false END")
    return (
        f"(CASE WHEN {datatype} IN ({text_codes}) THEN {value} IS NULL"
        f" WHEN {text} IS NOT NULL THEN ({datatype} NOT IN ({numeric_codes})"
        f" AND ({datatype} NOT IN ({array_codes}) OR {text} ~ '^\\[.*\\]$')"
        f" AND ({datatype} <> {int(DataType.Bytes)} OR {text} ~ '{_BASE64}')) OR ({exact})"
        f" WHEN {value} IS NULL OR {value} IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN true"
        f" {ranges} WHEN {datatype} = {int(DataType.Float)} THEN abs({value}) <= {FLOAT32_MAX!r} ELSE true END)"
    )


def _held_text(d: Decoded, i: int) -> str | None:
    """What a held sample keeps beside its float64: its text, its array's canonical text, or its exact integer."""
    if i in d.exact:
        return str(d.exact[i])
    return d.text.get(i, d.arrays.get(i))


def sort_samples(
    d: Decoded,
    session: NodeSession,
    device: str | None,
    *,
    now_ms: int,
    max_future_ms: int,
    allow_nan: bool,
) -> Verdict:
    """Resolve aliases (one numpy lookup), read the batch id and health figures, validate every sample."""
    n = d.n
    alias = d.alias
    control = np.zeros(n, np.bool_)
    batch_id: int | None = None
    health: dict[str, float] = {}
    tag = session.aliases.lookup(alias)
    tag[~d.has_alias] = -1
    for i in np.flatnonzero(~d.has_alias).tolist():
        name = d.names[i]
        if is_control_metric(name):
            control[i] = True
            if name == BATCH_METRIC and not d.is_null[i]:
                batch_id = int(d.value[i])
            continue
        t = session.aliases.tag_of_name.get((device, name), session.aliases.tag_of_name.get((None, name)))
        if t is not None:
            tag[i] = t
            role = health_field(name) if device is None or (device, name) not in session.aliases.tag_of_name else None
            if role is not None and not d.is_null[i]:
                health[role] = float(d.value[i])
    # Aliased protocol metrics (zhizao/Batch of the node or a device, bdSeq, Node Control/...) and node health.
    specials = session.special_aliases.get(device)
    if specials:
        for a, role in specials.items():
            hit = np.flatnonzero(d.has_alias & (alias == np.uint64(a)))
            if not len(hit):
                continue
            last = int(hit[-1])
            if role == "control":
                control[hit] = True
            elif role == "batch":
                control[hit] = True
                if not d.is_null[last]:
                    batch_id = int(d.value[last])
            elif not d.is_null[last]:
                health[role] = float(d.value[last])
    verdict_rejected: dict[str, str] = {}
    bad = np.zeros(n, np.bool_)
    unknown = (tag < 0) & ~control
    if unknown.any():
        verdict_rejected["unknown_alias"] = _example(d, unknown, "alias or name not in the birth")
        bad |= unknown
    is_text = np.zeros(n, np.bool_)
    if d.text:
        is_text[list(d.text)] = True
    is_array = np.zeros(n, np.bool_)
    if d.arrays:
        is_array[list(d.arrays)] = True
    is_bytes = is_array & (d.datatype == DataType.Bytes)  # bytes_value of a Bytes metric: base64 in `arrays`
    side = is_text | is_array
    null = d.is_null
    reason = np.full(n, -1, np.int8)
    nonfinite = ~np.isfinite(d.value) & ~d.is_null & ~side & ~control & ~bad
    if nonfinite.any():
        # A value the source itself marks as not good (an OPC UA Bad value arrives as NaN) is stored as what it
        # is: no value, with its quality. Only a NaN/Inf that claims to be good is refused.
        not_good = nonfinite & (d.quality != QUALITY_GOOD)
        if not_good.any():
            null = null | not_good
            nonfinite &= ~not_good
        if not allow_nan and nonfinite.any():
            verdict_rejected["non_finite"] = _example(d, nonfinite, "NaN or Inf value")
            reason[nonfinite] = 0
            bad |= nonfinite
    # A value that does not fit the datatype its tag was born with (text into a Double tag, 2.5 into an Int64
    # one, 300 into an Int8 one) is held whole in quarantine, never stored as something it is not.
    declared = session.aliases.declared_types(tag)
    wrong, out = misfits(d.value, is_text, declared, is_array, is_bytes)
    checked = ~null & ~control & ~bad
    wrong &= checked
    if wrong.any():
        verdict_rejected["wrong_datatype"] = _example(
            d, wrong, "text or an array into a numeric tag, or a value of another kind into a text or array tag")
        reason[wrong] = 3
        bad |= wrong
    out &= checked & ~bad
    if out.any():
        verdict_rejected["out_of_range"] = _example(d, out, "value does not fit the datatype of the birth")
        reason[out] = 4
        bad |= out
    future = (d.ts_ms > now_ms + max_future_ms) & ~control & ~bad
    if future.any():
        verdict_rejected["future_timestamp"] = _example(d, future, f"more than {max_future_ms} ms ahead")
        reason[future] = 1
        bad |= future
    old = (d.ts_ms < MIN_TS_MS) & ~control & ~bad
    if old.any():
        verdict_rejected["bad_timestamp"] = _example(d, old, "before 2000-01-01 or missing")
        reason[old] = 2
        bad |= old
    held: Held | None = None
    hold = reason >= 0
    if hold.any():
        idx = np.flatnonzero(hold)
        held = Held(Columns(tag[idx], d.ts_ms[idx], d.value[idx], null[idx], d.quality[idx], ~d.is_historical[idx]),
                    reason[idx], tuple(_held_text(d, int(i)) for i in idx))  # fmt: skip
    keep = ~bad & ~control & ~side
    live = ~d.is_historical
    side_values = {**d.text, **d.arrays}
    # DateTime samples (epoch ms, range-checked above) are stored as ISO 8601 texts, like arrays and strings.
    instants = keep & ~null & (declared == DataType.DateTime)
    if instants.any():
        keep &= ~instants
        side_values.update((i, iso_ms(int(d.value[i]))) for i in np.flatnonzero(instants).tolist())
    text_rows = [
        (int(d.ts_ms[i]), int(tag[i]), s, int(d.quality[i]), bool(live[i]))
        for i, s in side_values.items()
        if not bad[i] and not control[i]
    ]
    exact_rows = [(int(d.ts_ms[i]), int(tag[i]), v, int(d.quality[i]), bool(live[i]))
                  for i, v in d.exact.items() if keep[i]]  # fmt: skip
    return Verdict(
        tag=tag[keep],
        ts_ms=d.ts_ms[keep],
        value=d.value[keep],
        null=null[keep],
        quality=d.quality[keep],
        live=live[keep],
        text_rows=text_rows,
        exact_rows=exact_rows,
        rejected=verdict_rejected,
        batch_id=batch_id,
        health=health,
        total=n,
        held=held,
    )
