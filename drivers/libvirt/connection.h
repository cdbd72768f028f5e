#pragma once
// A long-lived connection to libvirtd, as libvirt's docs ask a daemon to keep one: one event-loop
// thread (registered before the first open), keepalive probes, a close callback, and a
// reconnect thread that re-opens with backoff and re-registers every callback. Lifecycle
// callbacks run on the event thread and only translate and hand the event on.

#include <libvirt/libvirt.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/result.h"

namespace kiln::drivers::libvirt {

// One opened connection with its callbacks; closing it deregisters them first.
class Session {
 public:
  Session(virConnectPtr conn, void* owner) : conn_(conn), owner_(owner) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();
  virConnectPtr get() const { return conn_; }
  void setLifecycleCallbackId(int id) { lifecycle_cb_ = id; }
  void setDeviceRemovedCallbackId(int id) { device_removed_cb_ = id; }
  void setCloseCallback(virConnectCloseFunc cb) { close_cb_ = cb; }

 private:
  virConnectPtr conn_;
  void* owner_;
  int lifecycle_cb_ = -1;
  int device_removed_cb_ = -1;
  virConnectCloseFunc close_cb_ = nullptr;
};
using SessionPtr = std::shared_ptr<Session>;

struct ConnectionOptions {
  std::string uri = "qemu:///system";
  int keepalive_interval = 5;
  unsigned keepalive_count = 3;
};

class Connection {
 public:
  using LifecycleHandler = std::function<void(const std::string& uuid, int event, int detail)>;
  // A device left a running domain (the guest released it): the domain's uuid, the device alias.
  using DeviceRemovedHandler =
      std::function<void(const std::string& uuid, const std::string& alias)>;

  explicit Connection(ConnectionOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts the event loop and the reconnect thread and makes the first attempt to connect. A
  // failure is reported but not fatal: the reconnect thread keeps trying.
  Result<void> start();
  void stop();

  // The current session, or kUnavailable while libvirtd is out of reach.
  Result<SessionPtr> session();
  bool connected() const { return connected_.load(); }

  // Reports a failed call; when `error` means the connection broke, a reconnect is scheduled.
  void reportFailure(const Error& error);

  void setLifecycleHandler(LifecycleHandler handler);
  void setDeviceRemovedHandler(DeviceRemovedHandler handler);
  void setReconnectHook(std::function<void()> hook);

 private:
  static void onClose(virConnectPtr conn, int reason, void* opaque);
  static int onLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque);
  static void onDeviceRemoved(virConnectPtr conn, virDomainPtr dom, const char* alias,
                              void* opaque);
  Result<SessionPtr> open();
  void reconnectLoop();
  void eventLoop();

  ConnectionOptions options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  SessionPtr session_;
  std::atomic<bool> connected_{false};
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  LifecycleHandler lifecycle_handler_;
  DeviceRemovedHandler device_removed_handler_;
  std::function<void()> reconnect_hook_;
  std::thread event_thread_;
  std::thread reconnect_thread_;
};

}  // namespace kiln::drivers::libvirt
