"""`zhizao bench decode`: an independent Sparkplug decoder (pysparkplug's high-level API) reads every message of a
seeded cluster run, each DATA message with the birth it refers to, and agrees with our codec on every value.

The cluster (simulator + one agent per line) runs on a private broker as in `bench cluster`; a tap keeps every
message of `spBv1.0/#` in arrival order. After the run each message goes through `NBirth`/`DBirth`/`NData`/
`DData`/`NDeath`/`DDeath`/`NCmd`/`DCmd`/`State` `.decode` (DATA and commands with `birth=` the latest birth of
that node or device), with no workaround: a metric missing from its birth, an unknown alias or an undecodable
value counts as an error. The same-run baseline is our own codec (`broker.sparkplug.codec.decode`) over the
same messages: metrics per second of each, and every DATA value compared between the two. Exit code 1 when
pysparkplug failed on any message or disagreed on any value.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from zhizao.bench.cluster import Cluster, start_broker_or_fail
from zhizao.bench.harness import Report, json_option, machine_line
from zhizao.broker.sparkplug.codec import Decoded
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.typed import bytes_text, ms_of_iso

__all__ = ["DecodeTally", "bench_decode", "decode_all"]

_WITH_BIRTH = ("NDATA", "DDATA", "NCMD", "DCMD")


@dataclass
class DecodeTally:
    """What the independent decoder made of a message stream."""

    messages: Counter[str] = field(default_factory=Counter)  # per message type
    metrics: int = 0  # metrics decoded by pysparkplug (births, data, deaths, commands)
    data_values: int = 0  # DATA values compared with our codec
    errors: list[str] = field(default_factory=list)  # "topic: error" of every message pysparkplug refused
    mismatches: list[str] = field(default_factory=list)  # DATA values where pysparkplug and our codec differ
    theirs_s: float = 0.0  # CPU time of pysparkplug's decode
    ours_s: float = 0.0  # CPU time of our codec's decode


def _ours_value(d: Decoded, i: int) -> object:
    """Our codec's value of metric `i` of a `Decoded`, as a Python value comparable with pysparkplug's."""
    if d.is_null[i]:
        return None
    if i in d.arrays:  # arrays' canonical JSON; Bytes' base64 as it is
        return d.arrays[i] if d.datatype[i] == DataType.Bytes else json.loads(d.arrays[i])
    return d.text.get(i, d.exact.get(i, float(d.value[i])))


def _same(ours: object, theirs: object) -> bool:
    """pysparkplug's value (bool, int, float, str, datetime, tuple) equals ours (float, int, str, list, None)."""
    if theirs is None or ours is None:
        return theirs is None and ours is None
    if isinstance(theirs, datetime):
        millis = round(theirs.timestamp() * 1000)
        if isinstance(ours, str):  # an ISO 8601 text of the same instant
            return ms_of_iso(ours) == millis
        return isinstance(ours, float | int) and ours == millis
    if isinstance(theirs, bytes):  # Bytes: ours is their base64
        return ours == bytes_text(theirs)
    if isinstance(theirs, tuple):
        return isinstance(ours, list) and len(ours) == len(theirs) and all(
            _same(o, t) for o, t in zip(ours, theirs, strict=True))
    if isinstance(theirs, str):
        return ours == theirs
    if isinstance(theirs, float) and math.isnan(theirs):
        return isinstance(ours, float) and math.isnan(ours)
    return isinstance(theirs, bool | int | float) and ours == theirs


def decode_all(messages: Sequence[tuple[str, bytes]]) -> DecodeTally:
    """Decode every message with pysparkplug (with births) and with our codec; tally counts, errors and mismatches."""
    import pysparkplug as psp

    from zhizao.broker.sparkplug.codec import PayloadError, decode

    classes: dict[str, Any] = {
        "NBIRTH": psp.NBirth, "DBIRTH": psp.DBirth, "NDATA": psp.NData, "DDATA": psp.DData,
        "NDEATH": psp.NDeath, "DDEATH": psp.DDeath, "NCMD": psp.NCmd, "DCMD": psp.DCmd,
    }  # fmt: skip
    tally = DecodeTally()
    births: dict[tuple[str, ...], Any] = {}  # (group, edge[, device]) -> latest birth
    datatypes: dict[tuple[str, ...], dict[int, int]] = {}  # the same births for our codec: alias -> datatype
    for topic, payload in messages:
        parts = topic.split("/")
        key: tuple[str, ...]
        if len(parts) >= 3 and parts[1] == "STATE":
            kind, key = "STATE", ()
        elif len(parts) in (4, 5) and parts[0] == "spBv1.0":
            kind, key = parts[2], (parts[1], *parts[3:])
        else:
            tally.errors.append(f"{topic}: not a Sparkplug topic")
            continue
        tally.messages[kind] += 1
        t0 = time.process_time()
        try:
            if kind == "STATE":
                psp.State.decode(payload)
                continue
            cls = classes[kind]
            if kind in _WITH_BIRTH:
                birth = births.get(key if kind in ("DDATA", "DCMD") else key[:2])
                if birth is None:
                    raise LookupError(f"{kind} before any birth of {'/'.join(key)}")
                msg = cls.decode(payload, birth=birth)
            else:
                msg = cls.decode(payload)
        except Exception as exc:  # noqa: BLE001  whatever the independent decoder raises is a finding
            tally.errors.append(f"{topic}: {type(exc).__name__}: {exc}")
            continue
        finally:
            tally.theirs_s += time.process_time() - t0
        if kind == "NBIRTH":  # a new node birth: the devices are born again after it
            births = {k: v for k, v in births.items() if k[:2] != key}
            datatypes = {k: v for k, v in datatypes.items() if k[:2] != key}
        metrics = getattr(msg, "metrics", None)
        if metrics is None:  # NDEATH: one bdSeq metric; DDEATH: none
            tally.metrics += 1 if kind == "NDEATH" else 0
            continue
        tally.metrics += len(metrics)
        t0 = time.process_time()
        try:
            ours = decode(payload, datatypes.get(key if kind != "NDATA" else key[:2]))
        except PayloadError as exc:
            tally.mismatches.append(f"{topic}: our codec refused it: {exc}")
            continue
        finally:
            tally.ours_s += time.process_time() - t0
        if kind in ("NBIRTH", "DBIRTH"):
            births[key] = msg
            datatypes[key] = {int(a): int(t) for a, t, h in zip(ours.alias, ours.datatype, ours.has_alias, strict=True) if h}
        if kind not in ("NDATA", "DDATA"):
            continue
        for i, metric in enumerate(metrics):
            tally.data_values += 1
            mine = _ours_value(ours, i)
            if not _same(mine, metric.value):
                tally.mismatches.append(f"{topic} metric {metric.name!r}: pysparkplug {metric.value!r}, ours {mine!r}")
    return tally


class _Tap:
    """Every message of `spBv1.0/#` in arrival order."""

    def __init__(self, url: str) -> None:
        from zhizao.bench.tap import BrokerTap

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self._tap = BrokerTap(url, "decode", ["spBv1.0/#"], self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((topic, payload))

    def streaming(self) -> set[str]:
        with self.lock:
            return {t.split("/")[3] for t, _ in self.messages if "/DDATA/" in t}

    def close(self) -> None:
        self._tap.close()


def _require_pysparkplug() -> None:
    try:
        import pysparkplug  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "zhizao bench decode needs pysparkplug (the independent decoder), which is not installed here: "
            "pip install --no-deps pysparkplug==0.6.1 (its pins conflict with ours; it needs nothing else we lack)"
        ) from None


@click.command("decode")
@click.option("--seconds", type=click.FloatRange(min=5), default=300.0, show_default=True, help="Measured run.")
@click.option("--speed", type=click.FloatRange(min=1), default=1.0, show_default=True, help="Simulator speed.")
@click.option("--seed", type=int, default=7, show_default=True, help="Simulator seed.")
@json_option
def bench_decode(seconds: float, speed: float, seed: int, json_path: Path | None) -> None:
    """pysparkplug reads every message of a cluster run (births, data with their birth, deaths): 0 errors."""
    _require_pysparkplug()
    work = Path(tempfile.mkdtemp(prefix="zhizao-bench-decode-"))
    url, stop_broker = start_broker_or_fail(work)
    tap = _Tap(url)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(work, url, speed=speed, seed=seed)
        cluster.wait_streaming(tap.streaming)
        click.echo(f"running for {seconds:g} s", err=True)
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cluster.stop()  # the clean stop's NDEATHs are read too
    finally:
        if cluster is not None:
            cluster.kill()
        tap.close()
        stop_broker()
    with tap.lock:
        messages = list(tap.messages)
    click.echo(f"decoding {len(messages)} messages", err=True)
    tally = decode_all(messages)
    report = Report("decode")
    report.figures.update(
        seconds=elapsed, agents=len(cluster.edges), messages=sum(tally.messages.values()),
        messages_by_type=dict(sorted(tally.messages.items())), metrics=tally.metrics,
        data_values_compared=tally.data_values, errors=len(tally.errors), value_mismatches=len(tally.mismatches),
        pysparkplug_metrics_per_cpu_s=tally.metrics / max(tally.theirs_s, 1e-9),
        codec_metrics_per_cpu_s=tally.metrics / max(tally.ours_s, 1e-9),
    )
    report.ratio("codec_vs_pysparkplug_decode", "codec_metrics_per_cpu_s", "pysparkplug_metrics_per_cpu_s")
    click.echo(machine_line(report.finish()))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(tally.messages.items()))
    click.echo(f"{sum(tally.messages.values())} messages ({kinds}); {tally.metrics} metrics decoded by pysparkplug; "
               f"{tally.data_values} DATA values compared with our codec")
    click.echo(f"errors {len(tally.errors)}, value mismatches {len(tally.mismatches)}")
    for line in (tally.errors + tally.mismatches)[:10]:
        click.echo(f"  {line}")
    report.write(json_path)
    if tally.errors or tally.mismatches or not tally.messages["DDATA"]:
        raise click.ClickException(f"pysparkplug could not read the stream as sent; logs in {work}")
