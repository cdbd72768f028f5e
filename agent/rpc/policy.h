#pragma once
// Who may call which API operation: rules in oslo.policy's syntax, as OpenStack operators write
// them in policy.yaml, parsed once at load into a small tree and evaluated per request.
//
// Rule syntax (docs/policy.md has the operator's version):
//   @  always          !  never          ""  (empty) always, as in oslo.policy
//   role:NAME          the caller has role NAME (case-insensitive, as oslo)
//   rule:NAME          the rule called NAME (another entry of the file or a built-in default)
//   KEY:%(ATTR)s       the caller's credential KEY equals the target's attribute ATTR
//                      (project_id:%(project_id)s = the caller's project owns the instance)
//   KEY:'literal'      the caller's credential KEY equals the literal (quotes optional)
//   not A, A and B, A or B, parentheses; not binds tighter than and, and tighter than or.
//
// Everything that can be wrong with a rule is found at load, never at request time: a rule that
// does not parse, rule: references to rules that do not exist, reference cycles, credential keys
// kiln does not have, and operation names (compute:...) kiln does not know.

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/rpc/token_auth.h"
#include "common/result.h"

namespace kiln::rpc {

// The caller's credentials are what authentication found (roles and project).
using Credentials = Caller;

// What the operation acts on, as attribute -> value; instances give "project_id" (the owner).
using Target = std::map<std::string, std::string>;

// The operation names, one per API route. A policy entry named compute:... that is not in this
// list is a load error: a typo would otherwise leave the intended rule silently unused.
const std::vector<std::string_view>& policyOperations();

inline constexpr const char* kDefaultPolicyFile = "/etc/kiln/policy.yaml";

class Policy {
 public:
  // The built-in defaults alone (the same rules config/policy.yaml ships).
  static const Policy& defaults();
  // The built-in defaults as (name, rule text), in the order config/policy.yaml lists them.
  static const std::vector<std::pair<std::string, std::string>>& defaultRules();

  // Parses a policy document (YAML, or JSON, which is YAML) whose entries override the
  // defaults. Errors read "SOURCE:LINE: reason".
  static Result<Policy> parse(std::string_view text, std::string_view source_name);

  // Reads and parses a policy file. A missing file is kNotFound, so the caller can decide what a
  // missing file means (kilnd: built-in defaults at the default path, an error elsewhere).
  static Result<Policy> loadFile(const std::string& path);

  // Whether `credentials` may perform `operation` on `target`. An operation without a rule is
  // denied.
  bool allows(std::string_view operation, const Credentials& credentials,
              const Target& target) const;

  // The rule text in force for `name` (file or default), empty optional when there is none.
  std::optional<std::string> ruleText(std::string_view name) const;
  // Every rule in force, name -> text.
  std::map<std::string, std::string> ruleTexts() const;

  // The parsed rules; defined in policy.cc.
  struct Node;
  struct Table;

 private:
  explicit Policy(std::shared_ptr<const Table> table);

  std::shared_ptr<const Table> table_;
};

}  // namespace kiln::rpc
