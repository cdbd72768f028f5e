#include "agent/rpc/json_response.h"

#include <fmt/format.h>

#include <string>

#include "common/log.h"
#include "common/uuid.h"

namespace kiln::rpc {

HttpResponse jsonResponse(unsigned status, const nlohmann::json& body) {
  HttpResponse response;
  response.status = status;
  // Messages may quote bytes a client sent; replacing invalid UTF-8 keeps dump() from throwing.
  response.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return response;
}

HttpResponse errorResponse(unsigned status, std::string_view message) {
  nlohmann::json body;
  body["error"] = {{"code", status}, {"message", std::string(message)}};
  return jsonResponse(status, body);
}

HttpResponse errorResponse(const Error& error) {
  const unsigned status = httpStatusFor(error.code);
  if (status != 500) return errorResponse(status, error.message);
  // An internal error's words come from deep inside (SQLite, a library, a path on the host): they
  // go to the log under a request id, and the caller gets the id to quote.
  const std::string request_id = "req-" + randomUuid();
  log::error("Internal error (request {}): {}", request_id, error.message);
  return errorResponse(500, fmt::format("Internal error (request {})", request_id));
}

unsigned httpStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthorized:
      return 401;
    case ErrorCode::kForbidden:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kConflict:
      return 409;
    case ErrorCode::kTooLarge:
      return 413;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kResourceExhausted:
      return 507;  // insufficient storage
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

}  // namespace kiln::rpc
