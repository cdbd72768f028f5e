#include "agent/api/public_fault.h"

#include <regex>

namespace kiln::api {

std::string publicFaultMessage(std::string_view message) {
  std::string out(message);
  // A tool's own words follow "(exit N)" (common/command_runner.h's describeFailure and the
  // connectors' messages): everything after it goes.
  static const std::regex tool_output(R"(\(exit -?[0-9]+\))");
  std::smatch exit_status;
  if (std::regex_search(out, exit_status, tool_output)) {
    out.resize(static_cast<std::size_t>(exit_status.position(0) + exit_status.length(0)));
  }
  // An absolute path: a '/' at the start of a word or after a quote, bracket or '=', up to the
  // next quote, blank or bracket. A URL's "//" follows a ':' and stays.
  static const std::regex path(R"((^|[\s'"(\[=])/[^\s'"()\[\]]*)");
  return std::regex_replace(out, path, "$1<host path>");
}

}  // namespace kiln::api
