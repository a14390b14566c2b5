// The Paho connect options every MQTT client of ours starts from (gateway forwarder, checkpoint-central,
// checkpointctl): MQTT v5, TLS with server certificate and host name verification when the uri is ssl://
// (never a plaintext fallback), optional client certificate, user name and password, keepalive, timeout.
#pragma once

#include <mqtt/connect_options.h>

#include "daemon/config/mqtt_config.h"

namespace cpd::forwarder {

mqtt::connect_options_builder base_connect_options(const config::MqttSection& cfg);

}  // namespace cpd::forwarder
