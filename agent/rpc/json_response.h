#pragma once
// JSON bodies for the API, built from nlohmann::json values, never from concatenated strings, so a
// message that quotes user input cannot break out of its string.

#include <string_view>

#include <nlohmann/json.hpp>

#include "agent/rpc/http_server.h"
#include "common/result.h"

namespace kiln::rpc {

HttpResponse jsonResponse(unsigned status, const nlohmann::json& body);

// Body: {"error": {"code": <status>, "message": "<message>"}}.
HttpResponse errorResponse(unsigned status, std::string_view message);
// The error's own message, except for a 500: its message (which may name host paths or quote a
// library) is logged under a fresh request id, and the body says only "Internal error (request
// req-<uuid>)".
HttpResponse errorResponse(const Error& error);

unsigned httpStatusFor(ErrorCode code);

}  // namespace kiln::rpc
