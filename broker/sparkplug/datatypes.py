"""Sparkplug B metric datatypes (Sparkplug 3.0.0, "Datatype Details")."""

from __future__ import annotations

from enum import IntEnum


class DataType(IntEnum):
    """The numeric datatype codes carried in `Metric.datatype`."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


# Value-field families: which oneof field a datatype travels in.
INT_TYPES = frozenset({DataType.Int8, DataType.Int16, DataType.Int32, DataType.UInt8, DataType.UInt16, DataType.UInt32})
LONG_TYPES = frozenset({DataType.Int64, DataType.UInt64, DataType.DateTime})
TEXT_TYPES = frozenset({DataType.String, DataType.Text, DataType.UUID})
SIGNED_BITS = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}
NUMERIC_TYPES = frozenset(
    INT_TYPES | LONG_TYPES | {DataType.Float, DataType.Double, DataType.Boolean}
)
