#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mqtt/async_client.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "daemon/core/ed25519.h"
#include "daemon/core/encoding.h"

namespace cpd::testing {

std::string build_dir() {
  // ctest sets CPD_BUILD_DIR; the benchmark and hand runs fall back to the tree this was built in.
  const char* d = std::getenv("CPD_BUILD_DIR");
  return d != nullptr ? d : CPD_DEFAULT_BUILD_DIR;
}

std::string binary(const std::string& relative) {
  const auto p = fs::path(build_dir()) / relative;
  if (!fs::exists(p)) {
    throw std::runtime_error("missing binary " + p.string());
  }
  return p.string();
}

void pause(std::chrono::milliseconds d) {
  std::this_thread::sleep_for(d);
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (ok) {
      return true;
    }
    pause(std::chrono::milliseconds(50));
  }
  return false;
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "cpd-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info != nullptr && info->result()->Failed()) {
    std::fprintf(stderr, "kept test directory %s for inspection\n", path_.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

Process::Process(std::vector<std::string> argv, const fs::path& log_prefix)
    : out_(log_prefix.string() + ".out"), err_(log_prefix.string() + ".err") {
  const int out_fd = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  const int err_fd = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::setpgid(0, 0);
    std::vector<char*> args;
    for (auto& a : argv) {
      args.push_back(a.data());
    }
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s failed\n", args[0]);
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  if (pid_ < 0) {
    throw std::runtime_error("fork failed");
  }
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(5));
  }
}

bool Process::running() {
  if (exit_code_) {
    return false;
  }
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return r == 0;
}

void Process::signal(int signo) {
  if (running()) {
    ::kill(pid_, signo);
  }
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= end) {
      return std::nullopt;
    }
    pause(std::chrono::milliseconds(20));
  }
  return exit_code_;
}

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

std::string Process::stdout_text() const {
  return slurp(out_);
}
std::string Process::stderr_text() const {
  return slurp(err_);
}

std::optional<std::string> Process::wait_for_stdout_line(const std::string& prefix,
                                                         std::chrono::milliseconds timeout) {
  return wait_for_line(&Process::stdout_text, prefix, timeout);
}

std::optional<std::string> Process::wait_for_stderr_line(const std::string& prefix,
                                                         std::chrono::milliseconds timeout) {
  return wait_for_line(&Process::stderr_text, prefix, timeout);
}

std::optional<std::string> Process::wait_for_line(std::string (Process::*text)() const,
                                                  const std::string& prefix,
                                                  std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  do {
    std::istringstream in((this->*text)());
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(prefix, 0) == 0) {
        return line;
      }
    }
    pause(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < end && running());
  return std::nullopt;
}

Mosquitto::Mosquitto(const fs::path& dir, std::uint16_t port) : Mosquitto(dir, port, MosquittoOptions{}) {}

Mosquitto::Mosquitto(const fs::path& dir, std::uint16_t port, const MosquittoOptions& options)
    : dir_(dir), port_(port == 0 ? free_port() : port), tls_(options.tls.has_value()) {
  fs::create_directories(dir_);
  std::ofstream conf(dir_ / "mosquitto.conf");
  // Run as ourselves: as root, mosquitto would switch to its own user and could not write into our temp dir.
  const passwd* pw = ::getpwuid(::geteuid());
  conf << "user " << (pw != nullptr ? pw->pw_name : "root") << "\n"
       << "listener " << port_ << " 127.0.0.1\n";
  if (options.tls) {
    conf << "cafile " << options.tls->ca_file.string() << "\n"
         << "certfile " << options.tls->cert_file.string() << "\n"
         << "keyfile " << options.tls->key_file.string() << "\n"
         << "tls_version tlsv1.2\n"
         << "require_certificate " << (options.tls->require_client_cert ? "true" : "false") << "\n";
  }
  if (!options.password_file.empty()) {
    conf << "password_file " << options.password_file.string() << "\n"
         << "allow_anonymous false\n";
  } else {
    conf << "allow_anonymous true\n";
  }
  conf << "persistence true\n"
       << "persistence_location " << dir_.string() << "/\n"
       << "max_queued_messages 0\n"
       << "max_inflight_messages 0\n"
       // Without it a broker's small PUBACKs can wait for the client's delayed ACK (Nagle): ~40 ms tails.
       << "set_tcp_nodelay true\n"
       // CPD_BROKER_LOG_ALL=1: every packet in the kept test directory's broker/mosquitto.log, for debugging.
       << (std::getenv("CPD_BROKER_LOG_ALL") != nullptr ? "log_type all\n" : "") << "log_dest file "
       << (dir_ / "mosquitto.log").string() << "\n";
}

void Mosquitto::start() {
  proc_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/sbin/mosquitto", "-c", (dir_ / "mosquitto.conf").string()},
      dir_ / "mosquitto");
  if (!wait_for_port(port_, std::chrono::seconds(10))) {
    throw std::runtime_error("mosquitto did not start on port " + std::to_string(port_) + ": " +
                             proc_->stderr_text());
  }
}

std::string Mosquitto::log_text() const {
  return slurp(dir_ / "mosquitto.log");
}

void Mosquitto::stop() {
  if (proc_) {
    proc_->signal(SIGTERM);
    proc_->wait(std::chrono::seconds(10));
    proc_.reset();
  }
}

struct MqttCollector::Impl {
  // Counts subscriptions the broker confirmed (one per connection, all topics at once).
  struct SubscribeListener : mqtt::iaction_listener {
    std::atomic<int> done{0};
    void on_success(const mqtt::token&) override { ++done; }
    void on_failure(const mqtt::token&) override {}
  };
  std::unique_ptr<mqtt::async_client> client;
  mutable std::mutex mutex;
  std::vector<Message> messages;
  SubscribeListener subscribed;
};

MqttCollector::MqttCollector(const std::string& uri, const std::vector<std::string>& topics)
    : MqttCollector(uri, topics, Options{}) {}

MqttCollector::MqttCollector(const std::string& uri, const std::vector<std::string>& topics,
                             const Options& options)
    : impl_(std::make_unique<Impl>()) {
  static std::atomic<int> counter{0};
  const std::string id = "cpd-test-collector-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  impl_->client = std::make_unique<mqtt::async_client>(uri, id, mqtt::create_options(MQTTVERSION_5),
                                                       static_cast<mqtt::iclient_persistence*>(nullptr));
  auto* impl = impl_.get();
  impl_->client->set_message_callback([impl](mqtt::const_message_ptr msg) {
    std::lock_guard lock(impl->mutex);
    impl->messages.push_back(Message{msg->get_topic(), msg->to_string(), msg->is_retained()});
  });
  auto* client = impl_->client.get();
  impl_->client->set_connected_handler([client, impl, topics](const std::string&) {
    auto filters = mqtt::string_collection::create(topics);
    client->subscribe(filters, mqtt::iasync_client::qos_collection(topics.size(), 1), nullptr,
                      impl->subscribed);
  });
  mqtt::properties props{{mqtt::property::SESSION_EXPIRY_INTERVAL, 3600}};
  auto opts = mqtt::connect_options_builder()
                  .mqtt_version(MQTTVERSION_5)
                  .clean_start(false)
                  .properties(props)
                  .automatic_reconnect(std::chrono::milliseconds(200), std::chrono::seconds(1))
                  .finalize();
  if (!options.ca_file.empty()) {
    mqtt::ssl_options ssl;
    ssl.set_trust_store(options.ca_file.string());
    ssl.set_enable_server_cert_auth(true);
    ssl.set_verify(true);
    if (!options.cert_file.empty()) {
      ssl.set_key_store(options.cert_file.string());
      ssl.set_private_key(options.key_file.string());
    }
    opts.set_ssl(std::move(ssl));
  }
  if (!options.username.empty()) {
    opts.set_user_name(options.username);
    opts.set_password(options.password);
  }
  impl_->client->connect(opts)->wait();
  // Later reconnects resume the session (queued messages are delivered).
  pause(std::chrono::milliseconds(200));
}

MqttCollector::~MqttCollector() {
  try {
    impl_->client->disconnect()->wait_for(std::chrono::seconds(2));
  } catch (...) {
  }
}

std::vector<MqttCollector::Message> MqttCollector::messages() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->messages;
}

std::vector<std::string> MqttCollector::payloads(const std::string& topic) const {
  // Filtered under the lock: copying every message (pictures included) on each poll stalled the
  // client's delivery thread, and a slow subscriber leaves messages queued at the broker.
  std::vector<std::string> out;
  std::lock_guard lock(impl_->mutex);
  for (const auto& m : impl_->messages) {
    if (m.topic == topic) {
      out.push_back(m.payload);
    }
  }
  return out;
}

namespace {

// SIGSTOPs the daemon, waits until `collector`'s count on `topic` has not moved for 750 ms (everything the
// broker accepted has arrived), runs `action`, waits for `before_resume` if given, and SIGCONTs the daemon.
bool with_daemon_frozen(Process& daemon, const MqttCollector& collector, const std::string& topic,
                        const std::function<void()>& action, const std::function<bool()>& before_resume) {
  daemon.signal(SIGSTOP);
  std::size_t last = collector.count(topic);
  auto still_since = std::chrono::steady_clock::now();
  const bool settled = collector.wait_until(
      [&] {
        const std::size_t now = collector.count(topic);
        if (now != last) {
          last = now;
          still_since = std::chrono::steady_clock::now();
        }
        return std::chrono::steady_clock::now() - still_since >= std::chrono::milliseconds(750);
      },
      std::chrono::seconds(60));
  bool ready = false;
  if (settled) {
    action();
    ready = !before_resume || collector.wait_until(before_resume, std::chrono::seconds(60));
  }
  daemon.signal(SIGCONT);
  return settled && ready;
}

}  // namespace

bool stop_broker_with_daemon_frozen(Process& daemon, const MqttCollector& collector, const std::string& topic,
                                    Mosquitto& broker) {
  return with_daemon_frozen(daemon, collector, topic, [&] { broker.stop(); }, {});
}

bool start_broker_with_daemon_frozen(Process& daemon, const MqttCollector& collector,
                                     const std::string& topic, Mosquitto& broker) {
  const int subscribed = collector.subscriptions();
  return with_daemon_frozen(
      daemon, collector, topic, [&] { broker.start(); },
      [&] { return collector.subscriptions() > subscribed; });
}

int MqttCollector::subscriptions() const {
  return impl_->subscribed.done.load();
}

std::size_t MqttCollector::count(const std::string& topic) const {
  std::lock_guard lock(impl_->mutex);
  return static_cast<std::size_t>(std::count_if(impl_->messages.begin(), impl_->messages.end(),
                                                [&](const Message& m) { return m.topic == topic; }));
}

nlohmann::json record_body(const std::string& jws) {
  const auto first = jws.find('.');
  const auto second = jws.find('.', first + 1);
  return nlohmann::json::parse(*base64url_decode(jws.substr(first + 1, second - first - 1)));
}

fs::path make_gateway_key(const fs::path& dir) {
  auto key = Ed25519PrivateKey::generate();
  key.save_pem_file((dir / "gateway.key").string());
  std::ofstream(dir / "gateway.pub.pem") << key.public_key().pem();
  return dir / "gateway.pub.pem";
}

}  // namespace cpd::testing

namespace cpd::testing {

std::vector<nlohmann::json> records_of(const MqttCollector& collector, const std::string& topic,
                                       const std::vector<std::string>& types) {
  std::map<std::uint64_t, nlohmann::json> by_seq;
  for (const auto& jws : collector.payloads(topic)) {
    auto body = record_body(jws);
    const std::string type = body.value("type", std::string());
    if (std::find(types.begin(), types.end(), type) != types.end()) {
      by_seq.emplace(body["seq"].get<std::uint64_t>(), std::move(body));
    }
  }
  std::vector<nlohmann::json> out;
  out.reserve(by_seq.size());
  for (auto& [seq, body] : by_seq) {
    out.push_back(std::move(body));
  }
  return out;
}

std::map<std::string, std::string> dock_acks(const fs::path& truth_file) {
  std::map<std::string, std::string> acks;
  std::ifstream in(truth_file);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("event", "") == "ack" && j.value("outcome", "") == "acked") {
      acks[j["uniqueId"].get<std::string>()] = j.value("sha256", "");
    }
  }
  return acks;
}

long peak_rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) {
    return 0;
  }
  std::istringstream fields(text.substr(paren + 2));
  std::string f;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // field 3 is the state; 14 utime, 15 stime
    if (i == 14) {
      utime = std::stoull(f);
    } else if (i == 15) {
      stime = std::stoull(f);
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long long wakeups(pid_t pid) {
  long long total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "status");
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0) {
        total += std::stoll(line.substr(line.find(':') + 1));
      }
    }
  }
  return total;
}

double cpu_seconds_of(const std::string& comm) {
  double total = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::ifstream c(entry.path() / "comm");
    std::string line;
    if (std::getline(c, line) && line == comm) {
      total += cpu_seconds(static_cast<pid_t>(std::stol(name)));
    }
  }
  return total;
}

std::string pseudo_random_bytes(std::size_t n, std::uint64_t seed) {
  std::string b(n, '\0');
  std::uint64_t x = 0x9E3779B97F4A7C15ULL * (seed + 1);
  for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
    x ^= x << 13U;
    x ^= x >> 7U;
    x ^= x << 17U;
    std::memcpy(b.data() + i, &x, 8);
  }
  return b;
}

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

long long store_query(const fs::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  long long n = -1;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 2000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return n;
}

std::string http_get_body(std::uint16_t port, const std::string& target) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  const std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
    char buf[8192];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      raw.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto end = raw.find("\r\n\r\n");
  return raw.rfind("HTTP/1.1 200", 0) == 0 && end != std::string::npos ? raw.substr(end + 4) : std::string();
}

struct MqttPublisher::Impl {
  Impl(const std::string& uri, const std::string& id)
      : client(uri, id, mqtt::create_options(MQTTVERSION_5),
               static_cast<mqtt::iclient_persistence*>(nullptr)) {}
  mqtt::async_client client;
  std::deque<mqtt::delivery_token_ptr> tokens;
  std::uint64_t sent = 0;
};

MqttPublisher::MqttPublisher(const std::string& uri, const std::string& id)
    : impl_(std::make_unique<Impl>(uri, id)) {
  impl_->client
      .connect(mqtt::connect_options_builder()
                   .mqtt_version(MQTTVERSION_5)
                   .clean_start(true)
                   .max_inflight(128)
                   .finalize())
      ->wait();
}

MqttPublisher::~MqttPublisher() {
  try {
    drain();
    impl_->client.disconnect()->wait_for(std::chrono::seconds(5));
  } catch (...) {
  }
}

void MqttPublisher::publish(const std::string& topic, const std::string& payload,
                            const std::string& response_topic, const std::string& correlation) {
  auto msg = mqtt::make_message(topic, payload, 1, false);
  mqtt::properties props;
  if (!response_topic.empty()) {
    props.add({mqtt::property::RESPONSE_TOPIC, response_topic});
  }
  if (!correlation.empty()) {
    props.add({mqtt::property::CORRELATION_DATA, correlation});
  }
  msg->set_properties(props);
  while (impl_->tokens.size() >= 64) {
    impl_->tokens.front()->wait_for(std::chrono::seconds(30));
    impl_->tokens.pop_front();
  }
  impl_->tokens.push_back(impl_->client.publish(msg));
  ++impl_->sent;
}

void MqttPublisher::drain() {
  while (!impl_->tokens.empty()) {
    impl_->tokens.front()->wait_for(std::chrono::seconds(30));
    impl_->tokens.pop_front();
  }
}

std::uint64_t MqttPublisher::sent() const {
  return impl_->sent;
}

mqtt::async_client& MqttPublisher::client() {
  return impl_->client;
}

double prometheus_sample(const std::string& text, const std::string& name) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find('\n', pos), text.size());
    const std::string line = text.substr(pos, end - pos);
    if (line.rfind(name, 0) == 0 && line.size() > name.size() &&
        (line[name.size()] == ' ' || line[name.size()] == '{')) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
    pos = end + 1;
  }
  return -1;
}

}  // namespace cpd::testing
