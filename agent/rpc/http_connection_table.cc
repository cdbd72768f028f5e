#include "agent/rpc/http_connection_table.h"

namespace kiln::rpc::httpd {

ConnectionTable::Admission ConnectionTable::admit(const std::string& address) {
  std::lock_guard lock(mutex_);
  std::size_t& from_peer = per_peer_[address];
  if (total_ >= max_total_ || from_peer >= max_per_peer_) {
    if (from_peer == 0) per_peer_.erase(address);
    return {std::nullopt, total_ >= max_total_};
  }
  ++total_;
  ++from_peer;
  return {Slot(shared_from_this(), address, false)};
}

std::optional<ConnectionTable::Slot> ConnectionTable::admitRejection() {
  std::lock_guard lock(mutex_);
  if (rejections_ >= kMaxRejectionsInFlight) return std::nullopt;
  ++rejections_;
  return Slot(shared_from_this(), {}, true);
}

void ConnectionTable::release(const std::string& address, bool rejection) {
  std::lock_guard lock(mutex_);
  if (rejection) {
    --rejections_;
    return;
  }
  --total_;
  auto it = per_peer_.find(address);
  if (it != per_peer_.end() && --it->second == 0) per_peer_.erase(it);
}

}  // namespace kiln::rpc::httpd
