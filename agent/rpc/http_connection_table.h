#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): counts open connections in total and per
// peer, so that no client (and no flood) can take every descriptor or every buffer.

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace kiln::rpc::httpd {

// Connections refused with a 503 still hold a socket while the answer is written; past this many
// at once, further ones are closed without an answer so a flood cannot exhaust descriptors.
constexpr std::size_t kMaxRejectionsInFlight = 64;

// Connections hold a Slot, whose destructor gives the place back however the connection ends.
class ConnectionTable : public std::enable_shared_from_this<ConnectionTable> {
 public:
  class Slot {
   public:
    Slot(std::shared_ptr<ConnectionTable> table, std::string address, bool rejection)
        : table_(std::move(table)), address_(std::move(address)), rejection_(rejection) {}
    Slot(Slot&&) noexcept = default;
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (table_) table_->release(address_, rejection_);
    }

   private:
    std::shared_ptr<ConnectionTable> table_;
    std::string address_;
    bool rejection_;
  };

  // A peer is a remote IP address on TCP, a user id on the unix socket.
  ConnectionTable(std::size_t max_total, std::size_t max_per_peer)
      : max_total_(max_total), max_per_peer_(max_per_peer) {}

  struct Admission {
    std::optional<Slot> slot;  // empty when the connection would pass a limit
    bool over_total = false;   // which limit: the total, or else the per-peer one
  };

  Admission admit(const std::string& address);
  // A place for a connection that is only told "503" (at most kMaxRejectionsInFlight at once).
  std::optional<Slot> admitRejection();

 private:
  void release(const std::string& address, bool rejection);

  const std::size_t max_total_;
  const std::size_t max_per_peer_;
  std::mutex mutex_;
  std::size_t total_ = 0;
  std::size_t rejections_ = 0;
  std::unordered_map<std::string, std::size_t> per_peer_;
};

}  // namespace kiln::rpc::httpd
