"""The contract: one id rule, the machine reference and its Sparkplug names, the state catalogue, quality codes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from zhizao.broker.contract import states
from zhizao.broker.contract.hierarchy import MachineRef
from zhizao.broker.contract.ids import ID_PATTERN, Id, IdError, is_id, validate_id
from zhizao.broker.sparkplug.topics import MessageType, Topic, TopicError, machine_topic

GOOD = ["a", "0", "sh-lingang", "cnc-1-m01", "a" * 64, "a-b"]
BAD = ["", "A", "Site_A", "a_b", "a b", "-a", "a-", "a/b", "a+b", "a#", "a" * 65, "é", "ａ"]


@pytest.mark.parametrize("value", GOOD)
def test_valid_ids(value: str) -> None:
    assert is_id(value) and validate_id("site", value) == value


@pytest.mark.parametrize("value", BAD)
def test_invalid_ids_name_the_field_and_value(value: str) -> None:
    with pytest.raises(IdError) as info:
        validate_id("machine", value)
    assert str(info.value).startswith(f"machine: {value!r} is not a valid id")
    assert isinstance(info.value, ValueError) and (info.value.kind, info.value.value) == ("machine", value)


def test_pydantic_id_type_uses_the_same_rule() -> None:
    class M(BaseModel):
        site: Id

    assert M(site="js-suzhou").site == "js-suzhou"
    with pytest.raises(ValidationError) as info:
        M(site="Site_A")
    err = info.value.errors()[0]
    assert err["loc"] == ("site",) and err["input"] == "Site_A" and "not a valid id" in err["msg"]
    assert M.model_json_schema()["properties"]["site"]["pattern"] == ID_PATTERN


def test_machine_ref_maps_onto_sparkplug_names() -> None:
    ref = MachineRef.parse("sh-lingang/cnc-1/cnc-1-m01")
    assert (ref.site, ref.edge, ref.machine, str(ref.line)) == ("sh-lingang", "cnc-1", "cnc-1-m01", "sh-lingang/cnc-1")
    topic = machine_topic(MessageType.DDATA, ref)
    assert topic == "spBv1.0/sh-lingang/DDATA/cnc-1/cnc-1-m01"
    assert Topic.parse(topic).machine == ref
    assert Topic.parse("spBv1.0/sh-lingang/NDATA/cnc-1").machine is None
    with pytest.raises(IdError, match=r"^paths\[2\]: 'a/B/c' is not a site/line/machine path \(edge 'B'"):
        MachineRef.parse("a/B/c", "paths[2]")
    with pytest.raises(IdError, match=r"^machine: 'a/b' is not a site/line/machine path$"):
        MachineRef.parse("a/b")
    with pytest.raises(IdError, match=r"^site: 'S' is not a valid id"):
        MachineRef("S", "e", "m")


@pytest.mark.parametrize(
    ("topic", "field"),
    [("spBv1.0/Site_A/NDATA/e1", "group_id"), ("spBv1.0/s1/DDATA/E 1/m1", "edge_node_id"),
     ("spBv1.0/s1/DDATA/e1/-m1", "device_id")],
)  # fmt: skip
def test_topic_parse_refuses_bad_ids_naming_the_field(topic: str, field: str) -> None:
    with pytest.raises(TopicError, match=rf"^topic {topic!r}: {field}: '.*' is not a valid id"):
        Topic.parse(topic)


def test_state_catalogue() -> None:
    assert list(states.CATALOGUE) == list(range(10000, 230000, 10000))
    assert states.CATALOGUE[60000].name == "inlet jam" and states.CATALOGUE[60000].name_zh == "进料堵塞"
    assert states.category_of(180001) is states.Category.FAILURE and states.category_of(5000) is states.Category.UNKNOWN
    assert states.state_name(180001) == "equipment failure" and states.state_name(230000) == "unknown"
    assert (states.base_of(180001), states.sub_of(180001)) == (180000, 1)
    assert states.is_state_code(10000) and states.is_state_code(229999.0)
    assert not any(states.is_state_code(c) for c in (9999, 230000, 10000.5, -10000))
    assert states.is_stop_code(40000) and not states.is_stop_code(30000)
    assert states.is_stop_reason(50000) and not states.is_stop_reason(49999)
    with pytest.raises(states.StateCodeError, match=r"^30000 is not a stop code"):
        states.validate_stop_code(30000)
    # A planned code a site counts as a loss becomes its kind of stop; a stop stays itself.
    assert states.CATALOGUE[210000].as_stop is states.Category.FAILURE
    assert states.CATALOGUE[150000].as_stop is states.Category.OPERATOR
    assert states.CATALOGUE[60000].as_stop is states.Category.MATERIAL
    assert {s.as_stop for s in states.CATALOGUE.values()} <= states.STOP_CATEGORIES


def test_analytics_keeps_an_equal_copy_of_the_categories_and_ranges() -> None:
    from zhizao.analytics.oee import config as analytics

    assert [c.name.lower() for c in analytics.Category] == [c.value for c in states.Category]
    assert analytics.MAX_STATE_CODE == states.MAX_STATE_CODE
    defaults = analytics.OeeConfig().ranges
    assert {r: defaults[r].name.lower() for r in range(1, 23)} == {
        code // 10000: s.category.value for code, s in states.CATALOGUE.items()
    }
    assert defaults[0] is analytics.Category.UNKNOWN  # below the catalogue: not interpreted


def test_quality_codes() -> None:
    from zhizao.broker.contract import quality
    from zhizao.broker.sparkplug import BirthMetric, DataType, decode, encode_birth

    assert (quality.QUALITY_BAD, quality.QUALITY_GOOD, quality.QUALITY_STALE) == (0, 192, 500)
    # A metric without a Quality property decodes as good.
    plain = BirthMetric("State", DataType.Int32, 10000)
    stale = BirthMetric("Rate", DataType.Double, 1.0, properties={"Quality": (DataType.Int32, quality.QUALITY_STALE)})
    payload = encode_birth(0, 1, [plain, stale])
    assert decode(payload).quality.tolist() == [quality.QUALITY_GOOD, quality.QUALITY_STALE]
