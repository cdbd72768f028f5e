// The policy reader and evaluator: every syntax form, precedence, and every load error with
// the line at fault.
#include "agent/rpc/policy.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>
#include <string>

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

namespace kiln::rpc {
namespace {

Credentials caller(std::vector<std::string> roles, std::string project = "") {
  return {std::move(roles), std::move(project), "test"};
}

// A policy whose only interesting entry is compute:instances:show = `rule`.
Policy withShowRule(const std::string& rule, const std::string& extra = "") {
  std::string text = extra + "\"compute:instances:show\": \"" + rule + "\"\n";
  auto policy = Policy::parse(text, "p.yaml");
  INFO(rule);
  INFO((policy ? std::string() : policy.error().message));
  REQUIRE(policy.ok());
  return std::move(policy).value();
}

bool shows(const std::string& rule, const Credentials& who, const Target& target = {},
           const std::string& extra = "") {
  return withShowRule(rule, extra).allows("compute:instances:show", who, target);
}

std::string loadError(const std::string& text) {
  auto policy = Policy::parse(text, "p.yaml");
  REQUIRE_FALSE(policy.ok());
  return policy.error().message;
}

const Target kOwnedByA = {{"project_id", "project-a"}};

}  // namespace

TEST_CASE("policy: @, ! and the empty rule", "[policy]") {
  CHECK(shows("@", caller({})));
  CHECK_FALSE(shows("!", caller({"admin"})));
  CHECK(shows("", caller({})));
  CHECK(shows("   ", caller({})));
}

TEST_CASE("policy: role checks are case-insensitive, as in oslo.policy", "[policy]") {
  CHECK(shows("role:admin", caller({"admin"})));
  CHECK(shows("role:Admin", caller({"ADMIN"})));
  CHECK_FALSE(shows("role:admin", caller({"reader", "administrator"})));
  CHECK_FALSE(shows("role:admin", caller({})));
}

TEST_CASE("policy: rule: refers to another entry or a default", "[policy]") {
  CHECK(shows("rule:mine", caller({"x"}), {}, "\"mine\": \"role:x\"\n"));
  CHECK_FALSE(shows("rule:mine", caller({"y"}), {}, "\"mine\": \"role:x\"\n"));
  // A built-in alias, and a built-in alias overridden by the file.
  CHECK(shows("rule:admin", caller({"admin"})));
  CHECK(shows("rule:admin", caller({"root"}), {}, "\"admin\": \"role:root\"\n"));
  CHECK_FALSE(shows("rule:admin", caller({"admin"}), {}, "\"admin\": \"role:root\"\n"));
}

TEST_CASE("policy: project_id:%(project_id)s compares with the target's owner", "[policy]") {
  const std::string owner = "project_id:%(project_id)s";
  CHECK(shows(owner, caller({}, "project-a"), kOwnedByA));
  CHECK_FALSE(shows(owner, caller({}, "project-b"), kOwnedByA));
  // Emptiness never matches: not a caller without a project, not an instance without one.
  CHECK_FALSE(shows(owner, caller({}, ""), kOwnedByA));
  CHECK_FALSE(shows(owner, caller({}, ""), {{"project_id", ""}}));
  CHECK_FALSE(shows(owner, caller({}, "project-a"), {}));
  // Another target attribute by name.
  CHECK(shows("project_id:%(tenant)s", caller({}, "t1"), {{"tenant", "t1"}}));
}

TEST_CASE("policy: literals with and without quotes", "[policy]") {
  CHECK(shows("project_id:'project-a'", caller({}, "project-a")));
  CHECK(shows("project_id:\\\"project-a\\\"", caller({}, "project-a")));
  CHECK(shows("project_id:project-a", caller({}, "project-a")));
  CHECK_FALSE(shows("project_id:project-a", caller({}, "project-b")));
}

TEST_CASE("policy: not binds tighter than and, and tighter than or", "[policy]") {
  // a or b and c  ==  a or (b and c)
  const std::string rule = "role:a or role:b and role:c";
  CHECK(shows(rule, caller({"a"})));
  CHECK_FALSE(shows(rule, caller({"b"})));
  CHECK(shows(rule, caller({"b", "c"})));
  // (a or b) and c
  CHECK_FALSE(shows("(role:a or role:b) and role:c", caller({"a"})));
  CHECK(shows("(role:a or role:b) and role:c", caller({"a", "c"})));
  // not a and b  ==  (not a) and b
  CHECK(shows("not role:a and role:b", caller({"b"})));
  CHECK_FALSE(shows("not role:a and role:b", caller({"a", "b"})));
  CHECK_FALSE(shows("not (role:a and role:b)", caller({"a", "b"})));
  CHECK(shows("not (role:a and role:b)", caller({"a"})));
  CHECK(shows("not not role:a", caller({"a"})));
  // Keywords in any case, parentheses glued to checks, nested parentheses.
  CHECK(shows("((role:a) OR (role:b AND NOT role:c))", caller({"b"})));
  CHECK_FALSE(shows("((role:a) OR (role:b AND NOT role:c))", caller({"b", "c"})));
  CHECK(shows("role:a and @", caller({"a"})));
  CHECK_FALSE(shows("role:a and !", caller({"a"})));
  CHECK(shows("! or @", caller({})));
}

TEST_CASE("policy: the built-in defaults", "[policy]") {
  const Policy& p = Policy::defaults();
  const auto admin = caller({"admin"});
  const auto scheduler = caller({"scheduler"}, "service");
  const auto reader_a = caller({"reader"}, "project-a");
  const auto reader_b = caller({"reader"}, "project-b");
  const auto nobody = caller({}, "project-a");
  for (std::string_view op : policyOperations()) {
    INFO(op);
    CHECK(p.allows(op, admin, kOwnedByA));
    CHECK(p.allows(op, scheduler, kOwnedByA));
    CHECK_FALSE(p.allows(op, nobody, kOwnedByA));
  }
  CHECK(p.allows("compute:instances:show", reader_a, kOwnedByA));
  // A console holds what the guest printed: a member's, not a reader's (nova's
  // os-console-output).
  CHECK_FALSE(p.allows("compute:instances:console", reader_a, kOwnedByA));
  CHECK(
      p.allows("compute:instances:console", caller({"member", "reader"}, "project-a"), kOwnedByA));
  CHECK_FALSE(p.allows("compute:instances:console", caller({"member"}, "project-b"), kOwnedByA));
  CHECK(p.allows("compute:instances:list", reader_a, {{"project_id", "project-a"}}));
  CHECK(p.allows("compute:flavors:list", reader_a, {}));
  CHECK_FALSE(p.allows("compute:instances:show", reader_b, kOwnedByA));
  CHECK_FALSE(p.allows("compute:instances:delete", reader_a, kOwnedByA));
  CHECK_FALSE(p.allows("compute:instances:create", reader_a, kOwnedByA));
  CHECK_FALSE(p.allows("compute:instances:action:reboot", reader_a, kOwnedByA));
  CHECK_FALSE(p.allows("compute:images:precache", reader_a, {}));
  CHECK_FALSE(p.allows("compute:host:show", reader_a, {}));
  CHECK_FALSE(p.allows("compute:no:such", admin, {}));  // no rule: denied
  // Every operation has a default.
  for (std::string_view op : policyOperations()) CHECK(p.ruleText(op).has_value());
}

TEST_CASE("policy: the shipped config/policy.yaml equals the built-in defaults", "[policy]") {
  std::ifstream in(KILN_SOURCE_DIR "/config/policy.yaml");
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  auto shipped = Policy::parse(text.str(), "config/policy.yaml");
  INFO((shipped ? std::string() : shipped.error().message));
  REQUIRE(shipped.ok());
  CHECK(shipped->ruleTexts() == Policy::defaults().ruleTexts());
  // Every default is spelled out in the file, not merely inherited.
  YAML::Node doc = YAML::Load(text.str());
  REQUIRE(doc.IsMap());
  CHECK(doc.size() == Policy::defaultRules().size());
  for (const auto& [name, rule] : Policy::defaultRules()) {
    INFO(name);
    REQUIRE(doc[name]);
    CHECK(doc[name].as<std::string>() == rule);
  }
}

TEST_CASE("policy: JSON files are read too", "[policy]") {
  auto p = Policy::parse(
      "{\n  \"compute:instances:delete\": \"role:janitor\",\n  \"janitor\": \"@\"\n}\n", "p.json");
  REQUIRE(p.ok());
  CHECK(p->allows("compute:instances:delete", caller({"janitor"}), {}));
  CHECK_FALSE(p->allows("compute:instances:delete", caller({"scheduler"}), {}));
  CHECK(p->allows("compute:instances:create", caller({"scheduler"}), {}));  // default kept
  auto bad = Policy::parse("{\n  \"compute:instances:delete\": \"role:\",\n}\n", "p.json");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.starts_with("p.json:2: "));
}

TEST_CASE("policy: an empty file means the defaults", "[policy]") {
  for (const char* text : {"", "# only a comment\n", "---\n"}) {
    auto p = Policy::parse(text, "p.yaml");
    REQUIRE(p.ok());
    CHECK(p->ruleTexts() == Policy::defaults().ruleTexts());
  }
}

TEST_CASE("policy: load errors name the file and line", "[policy]") {
  // YAML that does not parse.
  CHECK(loadError("\"a\": \"@\"\n\"b\": [unclosed\n").starts_with("p.yaml:"));
  CHECK_THAT(loadError("\"a\": \"@\"\n\"b\": \"x\n"), Catch::Contains("does not parse"));
  // Not a mapping.
  CHECK_THAT(loadError("- role:admin\n"),
             Catch::StartsWith("p.yaml:1: ") && Catch::Contains("mapping of rule names"));
  // Rules that do not parse, each on its own line.
  const std::string ok = "\"a\": \"@\"\n";
  auto at2 = [&](const std::string& rule) { return loadError(ok + "\"b\": \"" + rule + "\"\n"); };
  CHECK_THAT(at2("role:a and"), Catch::StartsWith("p.yaml:2: ") &&
                                    Catch::Contains("The rule for 'b' does not parse") &&
                                    Catch::Contains("ends where a check was expected"));
  CHECK_THAT(at2("(role:a"), Catch::StartsWith("p.yaml:2: ") && Catch::Contains("not closed"));
  CHECK_THAT(at2("role:a)"), Catch::StartsWith("p.yaml:2: ") && Catch::Contains("Unexpected ')'"));
  CHECK_THAT(at2("role:a role:b"),
             Catch::StartsWith("p.yaml:2: ") && Catch::Contains("Unexpected"));
  CHECK_THAT(at2("or role:a"), Catch::StartsWith("p.yaml:2: "));
  CHECK_THAT(at2("admin"), Catch::Contains("'admin' is not a check"));
  CHECK_THAT(at2("role:"), Catch::Contains("has no value"));
  CHECK_THAT(at2("user_id:%(user_id)s"), Catch::Contains("'user_id'"));
  CHECK_THAT(at2("project_id:%(project_id)"), Catch::Contains("%(NAME)s"));
  CHECK_THAT(at2("project_id:x%(project_id)s"), Catch::Contains("whole %(NAME)s"));
  CHECK_THAT(at2("project_id:''"), Catch::Contains("non-empty literal"));
  CHECK_THAT(at2(std::string(40, '(') + "@" + std::string(40, ')')), Catch::Contains("deep"));
  // A value that is not a string.
  CHECK_THAT(loadError(ok + "\"b\": [\"role:a\"]\n"),
             Catch::StartsWith("p.yaml:2: ") && Catch::Contains("must be a string"));
  CHECK_THAT(loadError(ok + "\"b\":\n"), Catch::StartsWith("p.yaml:2: "));
  CHECK_THAT(loadError(ok + "\"b\": {\"x\": 1}\n"), Catch::StartsWith("p.yaml:2: "));
  // Operation names kiln does not know.
  CHECK_THAT(loadError(ok + "\"compute:instances:destroy\": \"@\"\n"),
             Catch::StartsWith("p.yaml:2: ") && Catch::Contains("compute:instances:destroy"));
  // A rule given twice.
  CHECK_THAT(loadError(ok + "\"a\": \"!\"\n"),
             Catch::StartsWith("p.yaml:2: ") && Catch::Contains("first on line 1"));
  // Unknown references, on the line of the rule that refers.
  CHECK_THAT(loadError(ok + "\"compute:instances:delete\": \"rule:admn\"\n"),
             Catch::StartsWith("p.yaml:2: ") && Catch::Contains("rule:admn, which is not defined"));
  // Cycles, directly and through other rules, also through an overridden default.
  CHECK_THAT(loadError(ok + "\"b\": \"rule:b\"\n"),
             Catch::StartsWith("p.yaml:2: ") && Catch::Contains("refers to itself: b -> b"));
  CHECK_THAT(loadError("\"x\": \"rule:y or role:z\"\n\"y\": \"not rule:x\"\n"),
             Catch::Contains("refers to itself") && Catch::Contains("x -> y -> x"));
  CHECK_THAT(loadError("\"admin\": \"rule:admin_or_scheduler\"\n"),
             Catch::StartsWith("p.yaml:1: ") && Catch::Contains("refers to itself"));
}

TEST_CASE("policy: long reference chains are refused, short ones work", "[policy]") {
  std::string chain;
  for (int i = 0; i < 40; ++i) chain += fmt::format("\"r{}\": \"rule:r{}\"\n", i, i + 1);
  chain += "\"r40\": \"@\"\n";
  CHECK_THAT(loadError(chain), Catch::Contains("rule: references in a row"));
  auto p = Policy::parse(
      "\"r0\": \"rule:r1\"\n\"r1\": \"rule:r2\"\n\"r2\": \"role:x\"\n"
      "\"compute:host:show\": \"rule:r0\"\n",
      "p.yaml");
  REQUIRE(p.ok());
  CHECK(p->allows("compute:host:show", caller({"x"}), {}));
}

TEST_CASE("policy: loadFile reports a missing file as not found", "[policy]") {
  kiln::testing::TempDir dir;
  auto missing = Policy::loadFile(dir.path() + "/none.yaml");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == ErrorCode::kNotFound);
  std::ofstream(dir.path() + "/p.yaml") << "\"compute:host:show\": \"role:x\"\n\"bad\": \"(\"\n";
  auto bad = Policy::loadFile(dir.path() + "/p.yaml");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.starts_with(dir.path() + "/p.yaml:2: "));
}

TEST_CASE("policy: a policy file that group or others may write is refused", "[policy]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/policy.yaml";
  std::ofstream(path) << "\"compute:host:show\": \"@\"\n";
  for (mode_t mode : {0664, 0646, 0666}) {
    ::chmod(path.c_str(), mode);
    auto loose = Policy::loadFile(path);
    REQUIRE_FALSE(loose.ok());
    CHECK_THAT(loose.error().message, Catch::Contains("must not be writable by group or others"));
  }
  // Reading it is harmless: it holds rules, not secrets.
  ::chmod(path.c_str(), 0644);
  CHECK(Policy::loadFile(path).ok());
}

}  // namespace kiln::rpc
