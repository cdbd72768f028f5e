#pragma once
// Everything written to stderr (kiln's log, common/log.h) while one of these lives goes to a
// temporary file instead, so a test can read what was logged: that no secret was, for example.
// Debug lines are enabled meanwhile. Not for tests that run threads writing to stderr after it
// is gone.

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "common/log.h"

namespace kiln::testing {

class StderrCapture {
 public:
  StderrCapture() {
    char name[] = "/tmp/kiln-stderr-XXXXXX";
    int fd = ::mkstemp(name);
    path_ = name;
    std::fflush(stderr);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::close(fd);
    log::setMinLevel(log::Level::kDebug);
  }
  ~StderrCapture() {
    restore();
    ::unlink(path_.c_str());
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  // What was written so far.
  std::string text() const {
    std::fflush(stderr);
    std::ifstream in(path_);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
    log::setMinLevel(log::Level::kInfo);
  }

  std::string path_;
  int saved_ = -1;
};

}  // namespace kiln::testing
