#pragma once
// Where each API request runs. The HTTP server's I/O threads only parse requests and write
// responses; what a request asks for runs here:
//
// - GET /healthz is answered on the I/O thread that read it. It only asks whether libvirt is
//   connected, and it must answer while the pool is busy: that is what a health check is for.
// - Every other request runs the handler (ApiRouter::handle) on the bounded API worker pool, so a
//   slow Keystone or Glance holds up one worker, not every caller.
// - When the pool's queue is full the caller gets 503 with Retry-After: 1 at once, rather than
//   waiting behind work that may take minutes, and kilnd's memory stays bounded.

#include <atomic>

#include "agent/rpc/http_server.h"
#include "common/work_queue.h"

namespace kiln::api {

class ApiDispatcher {
 public:
  // `handler` runs on `pool`'s threads, several requests at once.
  ApiDispatcher(WorkQueue& pool, rpc::RequestHandler handler);

  // The HTTP server's asynchronous handler.
  void dispatch(rpc::HttpRequest request, rpc::Respond respond);
  rpc::AsyncRequestHandler asyncHandler() {
    return [this](rpc::HttpRequest request, rpc::Respond respond) {
      dispatch(std::move(request), std::move(respond));
    };
  }

  // From now on requests still queued are answered 503 without running the handler, so that
  // draining the pool at shutdown waits only for the requests that are already running.
  void stop() { stopping_ = true; }

 private:
  void run(const rpc::HttpRequest& request, const rpc::Respond& respond) const;

  WorkQueue& pool_;
  rpc::RequestHandler handler_;
  std::atomic<bool> stopping_{false};
};

// The answer to a request refused because every worker is busy and the queue is full.
rpc::HttpResponse apiBusy();

}  // namespace kiln::api
