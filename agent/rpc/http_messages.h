#pragma once
// Private to the HTTP server (agent/rpc/http_*.cc): between Boost.Beast's messages and the plain
// HttpRequest and HttpResponse the rest of kiln sees. Everything here is pure: no sockets, no
// logging, so each rule about what crosses the wire is in one place.

#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "agent/rpc/http_server.h"
#include "common/result.h"

namespace kiln::rpc::httpd {

namespace beast_http = boost::beast::http;
using BeastRequest = beast_http::request<beast_http::string_body>;
using BeastResponse = beast_http::response<beast_http::string_body>;

std::string_view toStd(boost::beast::string_view s);

using rpc::printableForLog;

// nullopt for a cut or non-hex escape.
std::optional<std::string> percentDecode(std::string_view s);

// A header value from a handler goes onto the wire verbatim; a CR or LF in it would let the value
// start a new header or end the head early.
bool isSafeHeaderValue(std::string_view value);

// The request as the handler sees it: the path decoded, the credentials that decide who calls.
// The body is moved out of `message`. Refuses what two readers could understand differently.
Result<HttpRequest> toHttpRequest(BeastRequest& message);

// Whether the server can put `response` on the wire as it is: a final status, and a content type
// and extra headers that can neither inject a header nor contradict the server's own framing.
bool isSendable(const HttpResponse& response);

// The wire form of a sendable response. A HEAD answer announces the length of the body it would
// have sent, but carries none.
BeastResponse toBeastResponse(HttpResponse response, bool keep_alive, bool head, unsigned version);

}  // namespace kiln::rpc::httpd
