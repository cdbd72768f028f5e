#include "agent/rpc/json_response.h"

#include <catch2/catch.hpp>

namespace kiln::rpc {
namespace {

TEST_CASE("errorResponse builds the JSON error document", "[rpc][json]") {
  HttpResponse response = errorResponse(404, R"(Instance "a" is not here)");
  CHECK(response.status == 404);
  CHECK(response.content_type == "application/json");
  nlohmann::json body = nlohmann::json::parse(response.body);
  CHECK(body ==
        nlohmann::json{{"error", {{"code", 404}, {"message", R"(Instance "a" is not here)"}}}});
}

TEST_CASE("errorResponse maps an Error's code to its HTTP status", "[rpc][json]") {
  HttpResponse response = errorResponse(Error::conflict("Instance 'a' is being deleted"));
  CHECK(response.status == 409);
  CHECK(nlohmann::json::parse(response.body)["error"]["message"] ==
        "Instance 'a' is being deleted");
}

TEST_CASE("a 500 carries a request id, never the internal message", "[rpc][json]") {
  HttpResponse response =
      errorResponse(Error::internal("SQLite: disk I/O error on /var/lib/kiln/kiln.db"));
  CHECK(response.status == 500);
  std::string message = nlohmann::json::parse(response.body)["error"]["message"];
  CHECK(message.starts_with("Internal error (request req-"));
  CHECK(message.size() == std::string("Internal error (request req-)").size() + 36);
  CHECK(response.body.find("SQLite") == std::string::npos);
  CHECK(response.body.find("/var/lib/kiln") == std::string::npos);
  // Other errors keep their message: it is written for the caller.
  CHECK(nlohmann::json::parse(errorResponse(Error::exhausted("No space left for the disk"))
                                  .body)["error"]["message"] == "No space left for the disk");
}

TEST_CASE("httpStatusFor maps every error code", "[rpc][json]") {
  CHECK(httpStatusFor(ErrorCode::kInvalidArgument) == 400);
  CHECK(httpStatusFor(ErrorCode::kUnauthorized) == 401);
  CHECK(httpStatusFor(ErrorCode::kForbidden) == 403);
  CHECK(httpStatusFor(ErrorCode::kNotFound) == 404);
  CHECK(httpStatusFor(ErrorCode::kConflict) == 409);
  CHECK(httpStatusFor(ErrorCode::kTooLarge) == 413);
  CHECK(httpStatusFor(ErrorCode::kUnavailable) == 503);
  CHECK(httpStatusFor(ErrorCode::kResourceExhausted) == 507);
  CHECK(httpStatusFor(ErrorCode::kInternal) == 500);
}

TEST_CASE("jsonResponse survives invalid UTF-8 from a client", "[rpc][json]") {
  HttpResponse response;
  REQUIRE_NOTHROW(response = errorResponse(400, "Bad name '\xff\xfe'"));
  CHECK(nlohmann::json::parse(response.body)["error"]["code"] == 400);
}

}  // namespace
}  // namespace kiln::rpc
