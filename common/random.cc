#include "common/random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>

namespace kiln {

void randomBytes(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Only ENOSYS (a kernel older than 3.17) or EFAULT: nothing kilnd can run without.
      std::abort();
    }
    done += static_cast<std::size_t>(n);
  }
}

std::uint64_t randomU64() {
  std::uint64_t value = 0;
  randomBytes({reinterpret_cast<std::uint8_t*>(&value), sizeof value});
  return value;
}

}  // namespace kiln
