#include "agent/api/api_dispatcher.h"

#include <exception>
#include <utility>

#include "agent/rpc/json_response.h"
#include "common/log.h"

namespace kiln::api {

using rpc::errorResponse;
using rpc::HttpRequest;
using rpc::HttpResponse;
using rpc::Respond;

namespace {

HttpResponse stopping() { return errorResponse(503, "kilnd is stopping; retry on another host"); }

}  // namespace

HttpResponse apiBusy() {
  HttpResponse response =
      errorResponse(503, "kilnd's API workers are busy and its queue is full; retry later");
  response.headers.emplace_back("Retry-After", "1");
  return response;
}

ApiDispatcher::ApiDispatcher(WorkQueue& pool, rpc::RequestHandler handler)
    : pool_(pool), handler_(std::move(handler)) {}

void ApiDispatcher::dispatch(HttpRequest request, Respond respond) {
  if (request.path == "/healthz") {
    // An exception here reaches the server, which logs it and answers 500.
    respond(handler_(request));
    return;
  }
  if (stopping_) return respond(stopping());
  // The job holds a copy of `respond`: a refused job is destroyed at once, and this copy is what
  // then answers (copies share one answer, so dropping the job's copy answers nothing).
  WorkQueue::Admission admission =
      pool_.tryPost([this, request = std::move(request), respond]() { run(request, respond); });
  switch (admission) {
    case WorkQueue::Admission::kQueued:
      return;
    case WorkQueue::Admission::kFull:
      return respond(apiBusy());
    case WorkQueue::Admission::kStopped:
      return respond(stopping());
  }
}

void ApiDispatcher::run(const HttpRequest& request, const Respond& respond) const {
  if (stopping_) return respond(stopping());
  HttpResponse response;
  try {
    response = handler_(request);
  } catch (const std::exception& e) {
    log::error("The API handler for {} {} from {} threw: {}", rpc::printableForLog(request.method),
               rpc::printableForLog(request.path), request.peer, e.what());
    response = errorResponse(500, "The server failed while handling the request");
  } catch (...) {
    log::error("The API handler for {} {} from {} threw a non-standard exception",
               rpc::printableForLog(request.method), rpc::printableForLog(request.path),
               request.peer);
    response = errorResponse(500, "The server failed while handling the request");
  }
  respond(std::move(response));
}

}  // namespace kiln::api
