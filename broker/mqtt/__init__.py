"""Broker addresses and the one MQTT client factory of edge, cloud and the benchmarks (`zhizao.bench.tap`);
the only package that builds paho clients.

Addresses (`url`): `mqtt://[user:password@]host[:port]` and `mqtts://...`, overridable by ZHIZAO_MQTT_URL.
`MqttClient` (`client`) builds and runs a paho-mqtt 2.x client: TLS with a CA file and a client certificate
(mutual TLS), MQTT 5 with fallback to 3.1.1 when the broker refuses 5, reconnects after `Backoff` delays
(`backoff`: capped, jittered), a Will installed before every CONNECT, clean start / session expiry, and
connect refusals logged once with their reason code. Sparkplug logic (births, STATE, acks, subscriptions)
stays with the callers, which map `MqttError` to their own errors.
"""

from zhizao.broker.mqtt.backoff import Backoff
from zhizao.broker.mqtt.client import Delivery, MqttClient, MqttError, MqttOptions, Protocol, TlsFiles, Will
from zhizao.broker.mqtt.url import (
    ENV_MQTT_URL,
    MqttEndpoint,
    MqttUrlError,
    mqtt_url_from_env,
    parse_mqtt_url,
    resolve_mqtt_url,
)

__all__ = [
    "ENV_MQTT_URL", "Backoff", "Delivery", "MqttClient", "MqttEndpoint", "MqttError", "MqttOptions",
    "MqttUrlError", "Protocol", "TlsFiles", "Will", "mqtt_url_from_env", "parse_mqtt_url", "resolve_mqtt_url",
]
