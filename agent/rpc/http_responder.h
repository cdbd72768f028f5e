#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): a request's answer on its way back from
// wherever the handler runs.
//
// The handler gets a Respond (http_server.h) and every copy of it shares one PendingResponse. The
// first call sends the answer; a later call is a bug, logged and dropped. When the last copy goes
// without a call, the client gets a 500, so a lost job cannot leave a connection waiting forever.
//
// Every answer passes the server's ResponseGate, which is what makes HttpServer::stop() safe
// without waiting for handlers on other threads: stop() closes the gate before it tears down the
// io_context and its connections. A Respond called (or dropped) after that finds the gate closed
// and does nothing; one called before holds the gate's lock while it posts the answer to the
// connection's strand, so the io_context cannot be destroyed under it. The PendingResponse only
// holds a weak reference to its connection, so a Respond kept past stop() keeps nothing alive
// that needs the io_context.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "agent/rpc/http_server.h"

namespace kiln::rpc::httpd {

class ResponseGate {
 public:
  using Deliver = std::function<void(HttpResponse)>;

  // Runs deliver(response) with the gate held open; false when the gate is closed.
  bool pass(const Deliver& deliver, HttpResponse response);
  // Waits for a pass() under way, then refuses every later one.
  void close();
  bool closed() const;

 private:
  mutable std::mutex mutex_;
  bool closed_ = false;
};

class PendingResponse {
 public:
  // `deliver` puts the answer on the connection's strand; it runs with the gate held open.
  // `request_name` ("GET /v1/x from 127.0.0.1:5000") names the request in log lines.
  PendingResponse(std::shared_ptr<ResponseGate> gate, ResponseGate::Deliver deliver,
                  std::string request_name);
  ~PendingResponse();  // answers 500 when nothing was answered and the server still runs
  PendingResponse(const PendingResponse&) = delete;
  PendingResponse& operator=(const PendingResponse&) = delete;

  // The handler's answer. Only the first call counts; false for a later one (a bug, logged).
  bool answer(HttpResponse response);
  // The server's 500 after a handler threw; nothing when the handler answered before it threw.
  void answerIfUnanswered(HttpResponse response);
  const std::string& requestName() const { return request_name_; }

 private:
  void deliver(HttpResponse response);

  std::shared_ptr<ResponseGate> gate_;
  ResponseGate::Deliver deliver_;
  std::string request_name_;
  std::atomic<bool> answered_{false};
};

// The handler's side of `pending`: copies share it.
Respond respondTo(std::shared_ptr<PendingResponse> pending);

}  // namespace kiln::rpc::httpd
