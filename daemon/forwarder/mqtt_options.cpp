// Shared Paho connect options (see the header).
#include "daemon/forwarder/mqtt_options.h"

#include <mqtt/ssl_options.h>

namespace cpd::forwarder {

mqtt::connect_options_builder base_connect_options(const config::MqttSection& cfg) {
  auto builder = mqtt::connect_options_builder();
  if (cfg.tls.enabled) {
    // Server certificate checked against our CA only, host name too unless configured off; TLS 1.2 or
    // newer. An ssl:// uri makes Paho use TLS or fail: there is no plaintext fallback to guard against.
    auto ssl = mqtt::ssl_options_builder()
                   .trust_store(cfg.tls.ca_file)
                   .enable_server_cert_auth(true)
                   .verify(cfg.tls.verify_hostname)
                   .ssl_version(MQTT_SSL_VERSION_TLS_1_2)
                   .finalize();
    // No Paho ssl error handler: Paho C++ 1.2 keeps a pointer to the ssl_options it was set on, which the
    // copies into connect_options leave dangling (a crash on the first TLS error).
    if (!cfg.tls.cert_file.empty()) {
      ssl.set_key_store(cfg.tls.cert_file);
      ssl.set_private_key(cfg.tls.key_file);
    }
    builder.ssl(std::move(ssl));
  }
  if (!cfg.username.empty()) {
    builder.user_name(cfg.username);
    if (!cfg.password.empty()) {
      builder.password(cfg.password);
    }
  }
  builder.mqtt_version(MQTTVERSION_5)
      .keep_alive_interval(std::chrono::seconds(cfg.keepalive_s))
      .connect_timeout(std::chrono::seconds(cfg.connect_timeout_s));
  return builder;
}

}  // namespace cpd::forwarder
