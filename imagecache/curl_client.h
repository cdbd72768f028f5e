#pragma once
// HttpClient over libcurl: one easy handle per request (so calls from several threads never
// share one), http and https only, no redirects, no signals, stall detection instead of a total
// timeout. The only file in kiln that includes curl is curl_client.cc.

#include "imagecache/http_client.h"

namespace kiln::imagecache {

class CurlClient final : public HttpClient {
 public:
  // Runs curl_global_init once per process, on first construction.
  CurlClient();

  Result<HttpResult> get(const HttpRequestSpec& spec) override;
  Result<HttpResult> stream(const HttpRequestSpec& spec, const ByteSink& sink,
                            const ResponseHook& on_response) override;
  Result<HttpResult> send(const HttpRequestSpec& spec, const std::string& method,
                          const std::string& body) override;
  // CURLOPT_UPLOAD with CURLOPT_INFILESIZE_LARGE, fed by a read callback in 512 KiB pieces.
  Result<HttpResult> upload(const HttpRequestSpec& spec, const std::string& method,
                            const std::string& file_path, const ByteSink& on_read) override;
};

// `url` without any user:password@ part, for messages and logs.
std::string redactUrl(std::string_view url);

}  // namespace kiln::imagecache
