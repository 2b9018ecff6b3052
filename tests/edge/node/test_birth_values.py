"""Birth values of the typed signals: the latest Bytes, Text and array values go into the DBIRTH as they were
published; one that does not fit its signal's datatype (the device changed type) is no value, not a failed
birth."""

from __future__ import annotations

import numpy as np
import pysparkplug as psp

from zhizao.broker.sparkplug.codec import encode_birth
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.node.messages import LastValues, SignalIndex, device_birth_metrics
from zhizao.edge.samples import SampleBlock, Signal, SignalTable

SIGNALS = [("Blob", DataType.Bytes, "AP96aGk="), ("Doc", DataType.Text, '{"locale":"de","text":"Presse"}'),
           ("Profile", DataType.DoubleArray, "[1.5,2.5]"), ("BadBlob", DataType.Bytes, "not base64!"),
           ("BadProfile", DataType.DoubleArray, '[{"locale":"","text":"x"}]')]


def test_typed_birth_values_and_misfits_as_no_value() -> None:
    table = SignalTable()
    for name, datatype, _ in SIGNALS:
        table.add(Signal("m1", name, int(datatype)))
    index = SignalIndex(table)
    last = LastValues(len(table))
    n = len(SIGNALS)
    last.update(SampleBlock(np.arange(n, dtype=np.int32), np.full(n, 1_767_225_600_000, np.int64), np.full(n, np.nan),
                            np.full(n, 192, np.int16), tuple((k, text) for k, (_, _, text) in enumerate(SIGNALS))))
    payload = encode_birth(1, 1_767_225_600_000, device_birth_metrics(0, index, last, 1_767_225_600_000, 0))
    got = {m.name: m.value for m in psp.DBirth.decode(payload).metrics}
    assert got == {"zhizao/Batch": 0, "Blob": b"\x00\xffzhi", "Doc": SIGNALS[1][2], "Profile": (1.5, 2.5),
                   "BadBlob": None, "BadProfile": None}
