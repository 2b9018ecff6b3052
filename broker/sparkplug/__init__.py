"""Sparkplug B 3.0: the protobuf schema, the array codec and the topic namespace."""

from broker.sparkplug.codec import BirthMetric, Decoded, PayloadError, decode, encode_birth, encode_data
from broker.sparkplug.datatypes import DataType
from broker.sparkplug.topics import MessageType, Topic, TopicError

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
