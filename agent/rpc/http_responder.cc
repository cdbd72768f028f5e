#include "agent/rpc/http_responder.h"

#include <utility>

#include "agent/rpc/json_response.h"
#include "common/log.h"

namespace kiln::rpc::httpd {

bool ResponseGate::pass(const Deliver& deliver, HttpResponse response) {
  std::lock_guard lock(mutex_);
  if (closed_) return false;
  deliver(std::move(response));
  return true;
}

void ResponseGate::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
}

bool ResponseGate::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

PendingResponse::PendingResponse(std::shared_ptr<ResponseGate> gate, ResponseGate::Deliver deliver,
                                 std::string request_name)
    : gate_(std::move(gate)),
      deliver_(std::move(deliver)),
      request_name_(std::move(request_name)) {}

PendingResponse::~PendingResponse() {
  if (answered_.exchange(true)) return;
  // After stop() nobody waits for the answer any more: dropping it then is normal.
  if (gate_->closed()) return;
  log::error("The handler for {} dropped its response without answering; the client gets a 500",
             request_name_);
  deliver(errorResponse(500, "The server failed while handling the request"));
}

bool PendingResponse::answer(HttpResponse response) {
  if (answered_.exchange(true)) {
    log::error("The handler for {} answered more than once; only the first answer is sent",
               request_name_);
    return false;
  }
  deliver(std::move(response));
  return true;
}

void PendingResponse::answerIfUnanswered(HttpResponse response) {
  if (answered_.exchange(true)) return;
  deliver(std::move(response));
}

void PendingResponse::deliver(HttpResponse response) {
  // A closed gate means the server stopped and closed the connection: there is nobody to answer.
  (void)gate_->pass(deliver_, std::move(response));
}

Respond respondTo(std::shared_ptr<PendingResponse> pending) {
  return [pending = std::move(pending)](HttpResponse response) {
    pending->answer(std::move(response));
  };
}

}  // namespace kiln::rpc::httpd
