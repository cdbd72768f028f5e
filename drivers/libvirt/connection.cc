#include "drivers/libvirt/connection.h"

#include <fmt/format.h>

#include <optional>

#include <chrono>

#include "common/log.h"
#include "drivers/libvirt/vir_error.h"

namespace kiln::drivers::libvirt {
namespace {

// virEventRegisterDefaultImpl must run once per process, before any connection is opened.
std::once_flag g_event_impl_once;
int g_event_impl_rc = 0;

const char* closeReasonName(int reason) {
  switch (reason) {
    case VIR_CONNECT_CLOSE_REASON_ERROR:
      return "error";
    case VIR_CONNECT_CLOSE_REASON_EOF:
      return "end of file";
    case VIR_CONNECT_CLOSE_REASON_KEEPALIVE:
      return "keepalive timeout";
    case VIR_CONNECT_CLOSE_REASON_CLIENT:
      return "closed by client";
    default:
      return "unknown";
  }
}

void wakeEventLoop(int timer, void*) { virEventRemoveTimeout(timer); }

}  // namespace

Session::~Session() {
  if (conn_ == nullptr) return;
  if (lifecycle_cb_ >= 0) virConnectDomainEventDeregisterAny(conn_, lifecycle_cb_);
  if (device_removed_cb_ >= 0) virConnectDomainEventDeregisterAny(conn_, device_removed_cb_);
  if (close_cb_ != nullptr) virConnectUnregisterCloseCallback(conn_, close_cb_);
  virResetLastError();
  virConnectClose(conn_);
}

Connection::Connection(ConnectionOptions options) : options_(std::move(options)) {}

Connection::~Connection() { stop(); }

void Connection::setLifecycleHandler(LifecycleHandler handler) {
  std::lock_guard lock(mutex_);
  lifecycle_handler_ = std::move(handler);
}

void Connection::setDeviceRemovedHandler(DeviceRemovedHandler handler) {
  std::lock_guard lock(mutex_);
  device_removed_handler_ = std::move(handler);
}

void Connection::setReconnectHook(std::function<void()> hook) {
  std::lock_guard lock(mutex_);
  reconnect_hook_ = std::move(hook);
}

Result<void> Connection::start() {
  std::call_once(g_event_impl_once, [] {
    silenceDefaultErrorHandler();
    g_event_impl_rc = virEventRegisterDefaultImpl();
  });
  if (g_event_impl_rc != 0) return takeLastError("virEventRegisterDefaultImpl");
  started_ = true;
  event_thread_ = std::thread([this] { eventLoop(); });
  auto first = open();
  std::optional<Error> failure;
  if (first) {
    std::lock_guard lock(mutex_);
    session_ = std::move(first).value();
    connected_ = true;
  } else {
    failure = first.error();
  }
  reconnect_thread_ = std::thread([this] { reconnectLoop(); });
  if (failure) return *failure;
  return success();
}

void Connection::stop() {
  if (!started_ || stopping_.exchange(true)) return;
  wake_.notify_all();
  if (reconnect_thread_.joinable()) reconnect_thread_.join();
  {
    std::lock_guard lock(mutex_);
    session_.reset();
    connected_ = false;
  }
  // A zero timeout makes virEventRunDefaultImpl return so the loop sees `stopping_`.
  virEventAddTimeout(0, wakeEventLoop, nullptr, nullptr);
  if (event_thread_.joinable()) event_thread_.join();
}

void Connection::eventLoop() {
  while (!stopping_.load()) {
    if (virEventRunDefaultImpl() < 0) {
      Error e = takeLastError("virEventRunDefaultImpl");
      log::warn("libvirt event loop: {}", e.message);
    }
  }
}

Result<SessionPtr> Connection::open() {
  virConnectPtr conn = virConnectOpen(options_.uri.c_str());
  if (conn == nullptr)
    return takeLastError(fmt::format("Connecting to libvirt at '{}'", options_.uri));
  auto session = std::make_shared<Session>(conn, this);
  if (virConnectSetKeepAlive(conn, options_.keepalive_interval, options_.keepalive_count) < 0) {
    // The test:/// driver has no keepalive; only remote connections need it.
    virResetLastError();
  }
  if (virConnectRegisterCloseCallback(conn, onClose, this, nullptr) == 0) {
    session->setCloseCallback(onClose);
  } else {
    virResetLastError();
  }
  int cb = virConnectDomainEventRegisterAny(conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(onLifecycle), this, nullptr);
  if (cb < 0) {
    Error e = takeLastError("Registering for libvirt lifecycle events");
    log::warn("{}", e.message);
  } else {
    session->setLifecycleCallbackId(cb);
  }
  int removed =
      virConnectDomainEventRegisterAny(conn, nullptr, VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                       VIR_DOMAIN_EVENT_CALLBACK(onDeviceRemoved), this, nullptr);
  if (removed < 0) {
    // Detaches still finish: they also poll the live definition, only more slowly.
    Error e = takeLastError("Registering for libvirt device-removed events");
    log::warn("{}", e.message);
  } else {
    session->setDeviceRemovedCallbackId(removed);
  }
  return session;
}

Result<SessionPtr> Connection::session() {
  std::lock_guard lock(mutex_);
  if (!session_ || !connected_.load()) {
    return Error::unavailable(fmt::format("Not connected to libvirt at '{}'", options_.uri));
  }
  return session_;
}

void Connection::reportFailure(const Error& error) {
  if (error.code != ErrorCode::kUnavailable) return;
  if (connected_.exchange(false)) {
    log::warn("Lost the connection to libvirt: {}", error.message);
    wake_.notify_all();
  }
}

void Connection::onClose(virConnectPtr, int reason, void* opaque) {
  auto* self = static_cast<Connection*>(opaque);
  // Runs on the event thread: only flag and wake the reconnect thread.
  if (self->connected_.exchange(false)) {
    log::warn("libvirt connection closed ({}); reconnecting", closeReasonName(reason));
  }
  self->wake_.notify_all();
}

int Connection::onLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  // The domain pointer is only valid during this callback: copy the UUID.
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, uuid) < 0) {
    virResetLastError();
    return 0;
  }
  auto* self = static_cast<Connection*>(opaque);
  LifecycleHandler handler;
  {
    std::lock_guard lock(self->mutex_);
    handler = self->lifecycle_handler_;
  }
  if (handler) handler(uuid, event, detail);
  return 0;
}

void Connection::onDeviceRemoved(virConnectPtr, virDomainPtr dom, const char* alias, void* opaque) {
  char uuid[VIR_UUID_STRING_BUFLEN];
  if (alias == nullptr || virDomainGetUUIDString(dom, uuid) < 0) {
    virResetLastError();
    return;
  }
  auto* self = static_cast<Connection*>(opaque);
  DeviceRemovedHandler handler;
  {
    std::lock_guard lock(self->mutex_);
    handler = self->device_removed_handler_;
  }
  if (handler) handler(uuid, alias);
}

void Connection::reconnectLoop() {
  auto backoff = std::chrono::milliseconds(250);
  while (!stopping_.load()) {
    {
      std::unique_lock lock(mutex_);
      if (connected_.load()) {
        backoff = std::chrono::milliseconds(250);
        wake_.wait(lock, [this] { return stopping_.load() || !connected_.load(); });
        continue;
      }
    }
    {
      // Drop the dead session outside the lock: closing deregisters its callbacks.
      SessionPtr old;
      std::lock_guard lock(mutex_);
      old = std::move(session_);
    }
    auto fresh = open();
    if (fresh) {
      std::function<void()> hook;
      {
        std::lock_guard lock(mutex_);
        session_ = std::move(fresh).value();
        connected_ = true;
        hook = reconnect_hook_;
      }
      log::info("Connected to libvirt at '{}'", options_.uri);
      if (hook) hook();
      continue;
    }
    log::debug("Reconnecting to libvirt failed: {}", fresh.error().message);
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, backoff, [this] { return stopping_.load(); });
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

}  // namespace kiln::drivers::libvirt
