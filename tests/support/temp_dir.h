#pragma once
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

namespace kiln::testing {

// A fresh directory under /tmp, removed with everything in it at the end of the test. Mode 0711:
// QEMU (another user) may need to reach files inside.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kiln-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
    ::chmod(path_.c_str(), 0711);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kiln::testing
