"""Sparkplug B 3.0: the protobuf schema, the array codec and the topic namespace."""

from zhizao.broker.sparkplug.codec import (
    BirthMetric,
    Decoded,
    PayloadError,
    decode,
    encode_birth,
    encode_data,
)
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import MessageType, Topic, TopicError

__all__ = [
    "BirthMetric",
    "DataType",
    "Decoded",
    "MessageType",
    "PayloadError",
    "Topic",
    "TopicError",
    "decode",
    "encode_birth",
    "encode_data",
]
