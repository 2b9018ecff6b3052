"""`zhizao bench ingest`: Sparkplug DDATA bytes -> committed rows/s in one ingest process, vs executemany.

Both sides write the same rows (the baseline takes the first `baseline_rows` samples of the same DDATA
stream) into the same schema on the same server in the same run: the ingest path (decode -> alias lookup
-> binary COPY -> one INSERT per batch, rollups and latest values maintained) and psycopg `executemany`
(pipeline mode) of prepared row tuples with ON CONFLICT DO NOTHING (no decode, no rollups: a generous
baseline). A third figure, the server floor, bounds both: the same rows, already inside the server, moved
into an empty `samples` by INSERT .. SELECT on two concurrent connections, as many as the ingest writes with
(no conflict check, no rollups, nothing from the client).
The floor over the baseline is the highest ratio any client path could show on this server and schema.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import click
import numpy as np
import psycopg

from zhizao.bench.harness import Report, json_option, machine_line, scratch_database, times
from zhizao.broker.contract.quality import QUALITY_GOOD
from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.sparkplug.codec import WIRE, BirthMetric, decode, encode_birth, encode_data
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, device_topic, node_topic
from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings
from zhizao.cloud.storage.migrate import apply_migrations

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _payloads(
    samples: int, nodes: int, machines: int, tags: int, per_message: int
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], int]:
    """Births and DDATA messages (topic, bytes): every sample a distinct (tag, ts), realistic aliases."""
    site = "bench-site"
    births: list[tuple[str, bytes]] = []
    data: list[tuple[str, bytes]] = []
    streams = [(f"line-{n}", f"m{m:02d}") for n in range(nodes) for m in range(machines)]
    for n in range(nodes):
        edge = f"line-{n}"
        births.append((node_topic(site, MessageType.NBIRTH, edge), encode_birth(0, T0, [
            BirthMetric("bdSeq", DataType.Int64, 0), BirthMetric("Node Control/Rebirth", DataType.Boolean, False),
            BirthMetric(BATCH_METRIC, DataType.Int64, 0, alias=1),
        ])))
        for m in range(machines):
            metrics = [BirthMetric(f"Process/Signal{t:03d}", DataType.Double, 0.0, alias=100 + m * 1000 + t,
                                   timestamp_ms=T0 - 1000) for t in range(tags)]
            births.append((device_topic(site, MessageType.DBIRTH, edge, f"m{m:02d}"),
                           encode_birth(1 + m, T0, metrics)))
    rng = np.random.default_rng(7)
    seq = {f"line-{n}": machines + 1 for n in range(nodes)}
    batch = {f"line-{n}": 0 for n in range(nodes)}
    produced = 0
    step = 0
    while produced < samples:
        edge, machine = streams[step % len(streams)]
        m = int(machine[1:])
        count = min(per_message, samples - produced)
        # Each message covers `count // tags` consecutive 10 ms ticks of all the machine's tags.
        ticks = -(-count // tags)
        base = T0 + (step // len(streams)) * ticks * 10
        ts = np.repeat(base + np.arange(ticks, dtype=np.int64) * 10, tags)[:count]
        alias = np.tile(100 + m * 1000 + np.arange(tags, dtype=np.uint64), ticks)[:count]
        value = rng.normal(50.0, 5.0, count)
        batch[edge] += 1
        payload = encode_data(
            seq[edge] % 256, int(base), alias, ts, value, np.full(count, 10, np.uint32),
            extra=[BirthMetric(BATCH_METRIC, DataType.Int64, batch[edge])],
        )
        seq[edge] += 1
        data.append((device_topic(site, MessageType.DDATA, edge, machine), payload))
        produced += count
        step += 1
    return births, data, produced


def _sample_arrays(data: list[tuple[str, bytes]], count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `count` samples of the DDATA stream as (ts ms, tag id, value) arrays, with the tag ids of
    the 2000-tag layout the ingest side registers (built before any clock starts)."""
    ts, tags, values = [], [], []
    machines: dict[str, int] = {}
    have = 0
    for topic, payload in data:
        device = topic.rsplit("/", 2)
        m = machines.setdefault(f"{device[1]}/{device[2]}", len(machines))
        d = decode(payload)
        keep = d.has_alias
        ts.append(d.ts_ms[keep].astype(np.int64))
        tags.append(m * 50 + (d.alias[keep].astype(np.int64) - 100) % 1000 + 1)
        values.append(d.value[keep].astype(np.float64))
        have += int(keep.sum())
        if have >= count:
            break
    return np.concatenate(ts)[:count], np.concatenate(tags)[:count], np.concatenate(values)[:count]


def _baseline_rows(data: list[tuple[str, bytes]], count: int) -> list[tuple[datetime, int, float, int]]:
    """The first `count` samples of the same DDATA stream as row tuples (built before the clock starts)."""
    ts, tags, values = _sample_arrays(data, count)
    return [
        (datetime.fromtimestamp(t / 1000, UTC), tag, v, QUALITY_GOOD)
        for t, tag, v in zip(ts.tolist(), tags.tolist(), values.tolist(), strict=True)
    ]


def _server_floor(url: str, data: list[tuple[str, bytes]], count: int, sessions: int = 2) -> float:
    """Seconds the server alone needs to insert `count` rows into an empty `samples`: the rows are first
    loaded (untimed) into unlogged tables on the server, then `sessions` concurrent INSERT .. SELECT + commit
    (as many as the ingest's writer connections) move them. No client work is timed."""
    ts, tags, values = _sample_arrays(data, count)
    parts = np.array_split(np.arange(len(ts)), sessions)
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE samples")
        for i, idx in enumerate(parts):
            table = f"bench_stage_{i}"
            conn.execute(f"CREATE UNLOGGED TABLE {table} (ts timestamptz, tag_id integer, value float8, quality smallint)")
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as cp:
                for t, tag, v in zip(ts[idx].tolist(), tags[idx].tolist(), values[idx].tolist(), strict=True):
                    cp.write_row((datetime.fromtimestamp(t / 1000, UTC), tag, v, QUALITY_GOOD))
            conn.execute(f"ANALYZE {table}")
        conn.commit()
    conns = [psycopg.connect(url) for _ in parts]
    barrier = threading.Barrier(len(parts) + 1)

    def move(i: int) -> None:
        barrier.wait()
        conns[i].execute(f"INSERT INTO samples (ts, tag_id, value, quality) SELECT * FROM bench_stage_{i}")
        conns[i].commit()

    threads = [threading.Thread(target=move, args=(i,)) for i in range(len(parts))]
    try:
        for t in threads:
            t.start()
        barrier.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        return time.perf_counter() - started
    finally:
        for c in conns:
            c.close()


def run_ingest_bench(
    samples: int, database_url: str, *, per_message: int = 2000, baseline_rows: int = 100_000
) -> Report:
    """Run both sides against fresh databases on `database_url`'s server; return the report."""
    # The numba wire reader compiles in the background on first use; measure the path it serves, not the
    # protobuf fallback of the first seconds.
    if not WIRE.ready(wait_s=120):
        raise click.ClickException("the numba Sparkplug reader did not compile; see the log")
    births, data, produced = _payloads(samples, nodes=4, machines=10, tags=50, per_message=per_message)
    settings = IngestSettings(queue_max_bytes=2**40, batch_max_samples=50_000, batch_max_ms=200)
    with scratch_database(database_url, "ingest") as url:
        svc = IngestService(url, "mqtt://127.0.0.1:1", host_id="zhizao-bench", settings=settings)
        svc.start_pipeline_only()
        try:
            for topic, payload in births:
                svc.submit(topic, payload, T0)
            deadline = time.monotonic() + 60
            while sum(len(s.devices) for s in svc.sessions.all()) < 40 and time.monotonic() < deadline:
                time.sleep(0.01)
            stored0 = svc.stats()["samples_stored"]
            started = time.perf_counter()
            now = T0 + 10**9
            for topic, payload in data:
                svc.submit(topic, payload, now)
            while svc.stats()["samples_stored"] - stored0 < produced:
                if time.perf_counter() - started > 600:
                    raise click.ClickException("ingest did not store every sample within 600 s")
                time.sleep(0.002)
            ingest_s = time.perf_counter() - started
            storage = svc.storage.kind if svc.storage else "?"
        finally:
            svc.stop()
    base_n = min(baseline_rows, produced)
    with scratch_database(database_url, "ingest") as url:
        apply_migrations(url)
        rows = _baseline_rows(data, base_n)
        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO samples (ts, tag_id, value, quality) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (tag_id, ts) DO NOTHING",
                    rows,
                )
            conn.commit()
            base_s = time.perf_counter() - started
        floor_s = _server_floor(url, data, produced)
    report = Report("ingest")
    report.figures.update(
        samples=produced,
        messages=len(data),
        samples_per_message=produced // max(1, len(data)),
        storage=storage,
        ingest={"seconds": ingest_s, "samples_per_s": produced / ingest_s},
        executemany={"rows": base_n, "seconds": base_s, "rows_per_s": base_n / base_s},
        # the server alone: INSERT .. SELECT of the same rows already on the server
        server_floor={"rows": produced, "seconds": floor_s, "rows_per_s": produced / floor_s},
    )
    report.ratio("ingest_vs_executemany", "ingest.samples_per_s", "executemany.rows_per_s")
    # server floor / executemany: the most any client path could reach
    report.ratio("ceiling_vs_executemany", "server_floor.rows_per_s", "executemany.rows_per_s")
    report.finish(database_url)
    return report


@click.command("ingest")
@click.option("--samples", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Samples to ingest (pre-encoded DDATA, 2000 samples per message).")
@json_option
@click.option("--quick", is_flag=True, help="Small run for CI (< 30 s): 200k samples, 20k baseline rows.")
def bench_ingest(samples: int, json_path: Path | None, quick: bool) -> None:
    """Sparkplug DDATA bytes -> committed rows per second, against executemany in the same run."""
    url = os.environ.get("ZHIZAO_DATABASE_URL") or DEFAULT_URL
    if quick:
        samples = min(samples, 200_000)
    click.echo(f"ingest bench: {samples:,} samples into a fresh database on {urlsplit(url).hostname} ...")
    try:
        report = run_ingest_bench(samples, url, baseline_rows=20_000 if quick else 100_000)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot reach PostgreSQL at {url!r} (set ZHIZAO_DATABASE_URL): {exc}") from exc
    f, r = report.figures, report.ratios
    ing, em, floor = f["ingest"], f["executemany"], f["server_floor"]
    click.echo(
        f"ingest path : {ing['samples_per_s']:>10,.0f} samples/s  ({f['samples']:,} samples, "
        f"{f['messages']} DDATA messages, {ing['seconds']:.3f} s)\n"
        f"executemany : {em['rows_per_s']:>10,.0f} rows/s     ({em['rows']:,} rows, {em['seconds']:.3f} s)\n"
        f"server floor: {floor['rows_per_s']:>10,.0f} rows/s     (the same rows moved by INSERT .. SELECT"
        f" inside the server, 2 sessions: no client path can be faster)\n"
        f"ratio       : {times(r['ingest_vs_executemany']['value'], 1)} executemany "
        f"(ceiling {times(r['ceiling_vs_executemany']['value'], 1)})   storage: {f['storage']}\n"
        f"{machine_line(report.machine)}"
    )
    report.write(json_path)
