// Runs the built checkpointctl binary end to end: keygen, pubkey, and verify over files of records
// sealed by the Sealer (good chain with a redelivery, a removed record, usage errors and exit codes).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "daemon/core/sealer.h"
#include "tests/unit/core/core_test_support.h"

namespace cpd {
namespace {

using ::testing::HasSubstr;

struct RunResult {
  int rc = -1;
  std::string out;
  std::string err;
};

class CheckpointctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* build = std::getenv("CPD_BUILD_DIR");
    ASSERT_NE(build, nullptr) << "CPD_BUILD_DIR not set (run through ctest)";
    binary_ = std::string(build) + "/tools/checkpointctl/checkpointctl";
    struct stat st {};
    ASSERT_EQ(::stat(binary_.c_str(), &st), 0) << binary_ << " not built";
  }

  RunResult run(const std::string& args, const std::string& stdin_file = "/dev/null") {
    RunResult r;
    const std::string out = dir_.file("stdout");
    const std::string err = dir_.file("stderr");
    const std::string cmd =
        "'" + binary_ + "' " + args + " <'" + stdin_file + "' >'" + out + "' 2>'" + err + "'";
    const int status = std::system(cmd.c_str());
    r.rc = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
    r.out = test::read_file(out);
    r.err = test::read_file(err);
    return r;
  }

  // Generates a key with the tool and seals n records with the library.
  std::vector<std::string> make_records(int n) {
    const RunResult kg =
        run("keygen --out '" + dir_.file("gw.key") + "' --pub '" + dir_.file("gw.pub") + "'");
    EXPECT_EQ(kg.rc, 0) << kg.err;
    const auto key = Ed25519PrivateKey::load_pem_file(dir_.file("gw.key"));
    Sealer sealer(key, "zj-hz-g60-k1234-n", ChainHead{});
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      Fact f;
      f.type = "speeding";
      f.time_ms = 1700000000000 + i;
      f.fields = {{"plate",
                   "\xe6\xb5\x99"
                   "A1234" +
                       std::to_string(i)},
                  {"speed", 1200 + i}};
      out.push_back(sealer.seal(f, 1700000000500 + i).jws);
    }
    return out;
  }

  std::string write_lines(const std::string& name, const std::vector<std::string>& lines) {
    std::string text;
    for (const auto& l : lines) {
      text += l + "\n";
    }
    test::write_file(dir_.file(name), text, 0644);
    return dir_.file(name);
  }

  test::TempDir dir_;
  std::string binary_;
};

TEST_F(CheckpointctlTest, KeygenWritesPrivateKeyAndPrintsPublicKey) {
  const RunResult r = run("keygen --out '" + dir_.file("k.key") + "'");
  ASSERT_EQ(r.rc, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat(dir_.file("k.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const auto pub = Ed25519PrivateKey::load_pem_file(dir_.file("k.key")).public_key();
  EXPECT_THAT(r.out, HasSubstr(pub.pem()));
  EXPECT_THAT(r.out, HasSubstr("kid: " + pub.kid()));

  const RunResult again = run("keygen --out '" + dir_.file("k.key") + "'");
  EXPECT_EQ(again.rc, 2);
  EXPECT_THAT(again.err, HasSubstr("refusing to overwrite"));

  const RunResult kid = run("pubkey --key '" + dir_.file("k.key") + "' --kid");
  EXPECT_EQ(kid.rc, 0);
  EXPECT_EQ(kid.out, pub.kid() + "\n");
  const RunResult pem = run("pubkey --key '" + dir_.file("k.key") + "'");
  EXPECT_EQ(pem.out, pub.pem());
  EXPECT_THAT(pem.err, HasSubstr(pub.kid()));

  ::chmod(dir_.file("k.key").c_str(), 0644);
  const RunResult open_key = run("pubkey --key '" + dir_.file("k.key") + "'");
  EXPECT_EQ(open_key.rc, 2);
  EXPECT_THAT(open_key.err, HasSubstr("it must be 0600 or stricter"));
}

TEST_F(CheckpointctlTest, VerifiesAGoodChainWithARedelivery) {
  const auto records = make_records(5);
  const std::string file =
      write_lines("feed.jws", {records[0], records[1], "", records[1], records[2], records[3], records[4]});
  const std::string pub = dir_.file("gw.pub");
  RunResult r = run("verify --pubkey '" + pub + "' --from-start '" + file + "'");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "verified 5 records (seq 1..5), 1 duplicate dropped, chain intact\n");

  r = run("verify --pubkey '" + pub + "' -", file);  // stdin
  EXPECT_EQ(r.rc, 0) << r.err;

  r = run("verify --pubkey '" + pub + "' --json '" + file + "'");
  EXPECT_EQ(r.rc, 0);
  const auto summary = nlohmann::json::parse(r.out);
  EXPECT_EQ(summary["ok"], true);
  EXPECT_EQ(summary["verified"], 5);
  EXPECT_EQ(summary["duplicates"], 1);
  EXPECT_EQ(summary["last_seq"], 5);

  r = run("verify --pubkey '" + pub + "' --print '" + file + "'");
  EXPECT_EQ(r.rc, 0);
  EXPECT_THAT(r.out, HasSubstr("seq 3  speeding  2023-11-14T22:13:20.002Z"));
  EXPECT_THAT(r.out, HasSubstr("plate=\xe6\xb5\x99"
                               "A12342"));
}

TEST_F(CheckpointctlTest, NamesTheFirstBadRecord) {
  const auto records = make_records(4);
  const std::string pub = dir_.file("gw.pub");
  const std::string gap = write_lines("gap.jws", {records[0], records[1], records[3]});
  RunResult r = run("verify --pubkey '" + pub + "' '" + gap + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("line 3"));
  EXPECT_THAT(r.err, HasSubstr("zj-hz-g60-k1234-n:4"));
  EXPECT_THAT(r.err, HasSubstr("seq 4 follows 2: 1 record missing"));
  EXPECT_THAT(r.out, HasSubstr("verified 2 records (seq 1..2)"));

  const std::string late = write_lines("late.jws", {records[1], records[2]});
  EXPECT_EQ(run("verify --pubkey '" + pub + "' '" + late + "'").rc, 0);
  r = run("verify --pubkey '" + pub + "' --from-start '" + late + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("expected seq 1"));

  // A different key.
  ASSERT_EQ(run("keygen --out '" + dir_.file("other.key") + "' --pub '" + dir_.file("other.pub") + "'").rc,
            0);
  r = run("verify --pubkey '" + dir_.file("other.pub") + "' '" + gap + "'");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.err, HasSubstr("is not the key's kid"));
}

TEST_F(CheckpointctlTest, UsageAndIoErrorsExitTwo) {
  make_records(1);
  EXPECT_EQ(run("verify '" + dir_.file("x") + "'").rc, 2);  // no --pubkey
  EXPECT_EQ(run("verify --pubkey '" + dir_.file("gw.pub") + "' '" + dir_.file("missing.jws") + "'").rc, 2);
  EXPECT_EQ(run("verify --pubkey '" + dir_.file("missing.pub") + "' -").rc, 2);
  EXPECT_EQ(run("verify --pubkey '" + dir_.file("gw.pub") + "' --count 3 -").rc, 2);  // --count needs --mqtt
  EXPECT_EQ(run("bogus").rc, 2);
  EXPECT_EQ(run("").rc, 2);
  const RunResult help = run("verify --help");
  EXPECT_EQ(help.rc, 0);
  EXPECT_THAT(help.out, HasSubstr("Exit codes"));
  EXPECT_THAT(help.out, HasSubstr("Example"));
}

// Defect: check-config passed a signing key checkpointd then refused at start. It now loads the key the
// daemon's way (config::load_signing_key) and names gateway.key's place.
TEST_F(CheckpointctlTest, CheckConfigRefusesEveryKeyTheDaemonWouldRefuse) {
  ASSERT_EQ(run("keygen --out '" + dir_.file("gw.key") + "' --pub '" + dir_.file("gw.pub") + "'").rc, 0);
  auto config_naming = [&](const std::string& key) {
    test::write_file(dir_.file("gw.yaml"),
                     "gateway:\n"
                     "  id: gw-1\n"
                     "  site: {name: \"Test site\", road: G60, direction: N, lat: 30.0, lon: 120.0}\n"
                     "  key: " +
                         key +
                         "\n"
                         "store:\n  path: " +
                         dir_.file("store.db") +
                         "\n"
                         "mqtt:\n  uri: tcp://127.0.0.1:1883\n"
                         "devices:\n"
                         "  - id: radar-1\n    kind: radar\n    tcp: {host: 192.0.2.10, port: 4001}\n"
                         "    lanes: [{lane: 1, x_min: 0.0, x_max: 3.75}]\n"
                         "    calibration: {certificate: C-1, valid_until: 2099-06-30}\n",
                     0644);
    return run("check-config '" + dir_.file("gw.yaml") + "'");
  };
  const RunResult good = config_naming(dir_.file("gw.key"));
  EXPECT_EQ(good.rc, 0) << good.out << good.err;
  EXPECT_THAT(good.out, HasSubstr(": valid"));

  ::chmod(dir_.file("gw.key").c_str(), 0640);
  test::write_file(dir_.file("empty.key"), "", 0600);
  ::mkdir(dir_.file("keydir").c_str(), 0700);
  const std::vector<std::pair<std::string, std::string>> refused = {
      {dir_.file("gw.key"), "has mode 0640; it must be 0600 or stricter"},
      {dir_.file("empty.key"), "does not hold an unencrypted PEM private key"},
      {dir_.file("keydir"), "is not a regular file"},
      {"/dev/zero", "is not a regular file"},
      {dir_.file("absent.key"), "does not exist"},
  };
  for (const auto& [key, why] : refused) {
    const RunResult r = config_naming(key);
    EXPECT_EQ(r.rc, 1) << key << ": " << r.out << r.err;
    // gateway.key's value is on line 4, column 8.
    EXPECT_THAT(r.out, HasSubstr(dir_.file("gw.yaml") + ":4:8: gateway.key: ")) << key;
    EXPECT_THAT(r.out, HasSubstr(why)) << key;
    EXPECT_THAT(r.out, HasSubstr(": invalid")) << key;
  }
}

}  // namespace
}  // namespace cpd
