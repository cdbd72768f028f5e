// libFuzzer entry point: arbitrary bytes as a policy file. Any crash, leak, sanitizer report,
// deep recursion or endless loop is a bug; a refusal naming a line is the expected answer for
// almost every input. What loads is also evaluated, so the evaluator meets odd trees too.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/rpc/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto policy = kiln::rpc::Policy::parse(text, "fuzz.yaml");
  if (!policy) {
    if (policy.error().message.rfind("fuzz.yaml", 0) != 0) __builtin_trap();  // must say where
    return 0;
  }
  kiln::rpc::Credentials caller{{"reader", "Scheduler"}, "p1", ""};
  kiln::rpc::Target target{{"project_id", "p1"}};
  for (std::string_view op : kiln::rpc::policyOperations()) {
    (void)policy->allows(op, caller, target);
  }
  return 0;
}
