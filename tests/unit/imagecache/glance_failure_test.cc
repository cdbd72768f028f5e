// glance::failureForStatus: the one mapping from Glance's HTTP status to kiln's error, for reads
// (GlanceSource) and changes (GlanceUploader), with the exact words of each message.

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "imagecache/glance_endpoint.h"

namespace {

using kiln::ErrorCode;
using kiln::imagecache::glance::Call;
using kiln::imagecache::glance::Failure;
using kiln::imagecache::glance::failureForStatus;

constexpr const char* kServer = "http://glance:9292";

struct Expected {
  long status;
  ErrorCode code;
  bool retryable;
  std::string message;
};

void checkAll(const Call& call, std::string_view excerpt, const std::vector<Expected>& cases) {
  for (const Expected& e : cases) {
    INFO("HTTP " << e.status);
    Failure f = failureForStatus(e.status, excerpt, call);
    CHECK(f.error.code == e.code);
    CHECK(f.retryable == e.retryable);
    CHECK(f.error.message == e.message);
  }
}

TEST_CASE("A read's failures name the image and the server", "[glance]") {
  const std::string g = "Glance at 'http://glance:9292' ";
  checkAll(Call::read(kServer, "abc", /*sent_token=*/true), "Access denied",
           {
               {404, ErrorCode::kNotFound, false,
                "Image 'abc' was not found in Glance at 'http://glance:9292'"},
               {401, ErrorCode::kUnauthorized, false,
                g + "rejected kiln's token for image 'abc' (HTTP 401); check [glance] token or "
                    "token_file"},
               {403, ErrorCode::kForbidden, false,
                g + "does not let this node read image 'abc' (HTTP 403): Access denied"},
               {500, ErrorCode::kUnavailable, true,
                g + "answered HTTP 500 for image 'abc': Access denied"},
               {429, ErrorCode::kUnavailable, true,
                g + "answered HTTP 429 for image 'abc': Access denied"},
               {599, ErrorCode::kUnavailable, true,
                g + "answered HTTP 599 for image 'abc': Access denied"},
               // A read is not refused as a change is: these are answers kiln does not expect.
               {400, ErrorCode::kUnavailable, false,
                g + "answered HTTP 400 for image 'abc', which kiln does not expect: Access denied"},
               {409, ErrorCode::kUnavailable, false,
                g + "answered HTTP 409 for image 'abc', which kiln does not expect: Access denied"},
               {413, ErrorCode::kUnavailable, false,
                g + "answered HTTP 413 for image 'abc', which kiln does not expect: Access denied"},
               {600, ErrorCode::kUnavailable, false,
                g + "answered HTTP 600 for image 'abc', which kiln does not expect: Access denied"},
           });
  checkAll(Call::read(kServer, "abc", /*sent_token=*/false), "",
           {
               {401, ErrorCode::kUnauthorized, false,
                g + "wants a token for image 'abc' (HTTP 401); set [glance] token or token_file"},
               {403, ErrorCode::kForbidden, false,
                g + "does not let this node read image 'abc' (HTTP 403)"},
               {503, ErrorCode::kUnavailable, true, g + "answered HTTP 503 for image 'abc'"},
           });
}

TEST_CASE("A change's failures name what was asked, and Glance's refusals are kept apart",
          "[glance]") {
  const std::string g = "Glance at 'http://glance:9292' ";
  checkAll(
      Call::change(kServer, "upload the data of image 'abc'", "abc", /*sent_token=*/true),
      "quota exceeded",
      {
          {400, ErrorCode::kInvalidArgument, false,
           g + "refused to upload the data of image 'abc' (HTTP 400): quota exceeded"},
          {401, ErrorCode::kUnauthorized, false,
           g + "rejected kiln's token when asked to upload the data of image 'abc' (HTTP 401); "
               "check [glance] token or token_file"},
          {403, ErrorCode::kForbidden, false,
           g + "does not let this node upload the data of image 'abc' (HTTP 403): quota "
               "exceeded"},
          {404, ErrorCode::kNotFound, false,
           "Image 'abc' was not found in Glance at 'http://glance:9292'"},
          {409, ErrorCode::kConflict, false,
           g + "refused to upload the data of image 'abc': the image is not in a state that "
               "allows it (HTTP 409): quota exceeded"},
          {413, ErrorCode::kTooLarge, false,
           g + "refused to upload the data of image 'abc': over its size or quota limits (HTTP "
               "413): quota exceeded"},
          {502, ErrorCode::kUnavailable, true,
           g + "answered HTTP 502 when asked to upload the data of image 'abc': quota exceeded"},
          {302, ErrorCode::kUnavailable, false,
           g + "answered HTTP 302 when asked to upload the data of image 'abc', which kiln does "
               "not expect: quota exceeded"},
      });
  // Creating an image: there is no image yet, so a 404 is a wrong endpoint, not a lost image.
  checkAll(Call::change(kServer, "create image 'n'", "", /*sent_token=*/false), "",
           {
               {404, ErrorCode::kUnavailable, false,
                g + "answered HTTP 404 when asked to create image 'n', which kiln does not "
                    "expect"},
               {401, ErrorCode::kUnauthorized, false,
                g + "wants a token to create image 'n' (HTTP 401); set [glance] token or "
                    "token_file"},
           });
}

}  // namespace
