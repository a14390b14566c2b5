// The journald line form and the per component/device rate limit.
#include "daemon/log/log.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace cpd::log {
namespace {

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    out_ = std::tmpfile();
    ASSERT_NE(out_, nullptr);
    set_output(out_);
    set_min_level(Level::kInfo);
  }
  void TearDown() override {
    set_output(nullptr);
    std::fclose(out_);
  }
  std::vector<std::string> lines() {
    std::fflush(out_);
    std::rewind(out_);
    std::vector<std::string> out;
    char buf[1024];
    while (std::fgets(buf, sizeof(buf), out_) != nullptr) {
      std::string line(buf);
      if (!line.empty() && line.back() == '\n') {
        line.pop_back();
      }
      out.push_back(line);
    }
    return out;
  }
  std::FILE* out_ = nullptr;
};

TEST_F(LogTest, OneLineWithPriorityComponentAndDevice) {
  warn("radar", "radar-1", "link lost");
  notice("daemon", "", "running");
  debug("daemon", "", "not shown at info level");
  EXPECT_EQ(lines(), (std::vector<std::string>{"<4>radar radar-1: link lost", "<5>daemon: running"}));
}

TEST_F(LogTest, AFlappingDeviceIsHeldBackButOthersAndErrorsAreNot) {
  for (int i = 0; i < 100; ++i) {
    warn("radar", "radar-1", "link lost " + std::to_string(i));
  }
  warn("radar", "radar-2", "link lost");
  for (int i = 0; i < 100; ++i) {
    error("radar", "radar-1", "failing " + std::to_string(i));
  }
  const auto all = lines();
  int r1_warn = 0;
  int r1_error = 0;
  int held = 0;
  bool r2 = false;
  for (const auto& l : all) {
    r1_warn += l.rfind("<4>radar radar-1: link lost", 0) == 0;
    r1_error += l.rfind("<3>radar radar-1: failing", 0) == 0;
    held += l.find("holding back similar lines") != std::string::npos;
    r2 = r2 || l == "<4>radar radar-2: link lost";
  }
  EXPECT_EQ(r1_warn, 20);
  EXPECT_EQ(r1_error, 20) << "errors have their own budget, and a budget";
  EXPECT_EQ(held, 2);
  EXPECT_TRUE(r2) << "another device is not held back by radar-1's flood";
  EXPECT_LE(all.size(), 43u);
}

}  // namespace
}  // namespace cpd::log
