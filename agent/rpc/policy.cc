#include "agent/rpc/policy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "common/fs.h"
#include "common/unique_fd.h"

namespace kiln::rpc {

namespace {

// Bounds that keep a hostile or careless file from costing unbounded memory, stack or time.
constexpr std::size_t kMaxPolicyFileBytes = 1024 * 1024;
constexpr std::size_t kMaxRules = 1000;
constexpr std::size_t kMaxRuleTextBytes = 4096;
constexpr std::size_t kMaxNesting = 32;         // parentheses and `not` within one rule
constexpr std::size_t kMaxReferenceDepth = 32;  // rule:a -> rule:b -> ... chains
constexpr std::string_view kBuiltInSource = "built-in policy";

}  // namespace

struct Policy::Node {
  enum class Kind {
    kAlways,
    kNever,
    kRole,                     // value: the role, lower-cased
    kRule,                     // value: the rule's name; rule: its index once resolved
    kCredentialEqualsTarget,   // key: credential; value: target attribute
    kCredentialEqualsLiteral,  // key: credential; value: the literal
    kAnd,
    kOr,
    kNot,
  };
  Kind kind = Kind::kAlways;
  std::string key;
  std::string value;
  std::size_t rule = 0;
  std::vector<Node> children;
};

struct Policy::Table {
  struct Entry {
    std::string name;
    std::string text;
    std::string source;  // file name or kBuiltInSource
    std::size_t line = 0;
    Node root;
  };
  std::vector<Entry> entries;
  std::map<std::string, std::size_t, std::less<>> index;
};

const std::vector<std::string_view>& policyOperations() {
  static const std::vector<std::string_view> operations = {
      "compute:instances:create",
      "compute:instances:create:inline_flavor",
      "compute:instances:create:zero_disk_flavor",
      "compute:instances:delete",
      "compute:instances:show",
      "compute:instances:show:fault_details",
      "compute:instances:list",
      "compute:instances:console",
      "compute:instances:action:reboot",
      "compute:instances:action:stop",
      "compute:instances:action:start",
      "compute:instances:action:snapshot",
      "compute:instances:action:attach_volume",
      "compute:instances:action:detach_volume",
      "compute:instances:interfaces:attach",
      "compute:instances:interfaces:detach",
      "compute:images:list",
      "compute:images:show",
      "compute:images:precache",
      "compute:images:evict",
      "compute:host:show",
      "compute:flavors:list",
  };
  return operations;
}

const std::vector<std::pair<std::string, std::string>>& Policy::defaultRules() {
  // Keep in step with config/policy.yaml; a unit test compares the two.
  static const std::vector<std::pair<std::string, std::string>> rules = {
      {"admin", "role:admin"},
      {"scheduler", "role:scheduler"},
      {"reader", "role:reader"},
      {"member", "role:member"},
      {"owner", "project_id:%(project_id)s"},
      {"admin_or_scheduler", "rule:admin or rule:scheduler"},
      {"project_reader", "rule:reader and rule:owner"},
      {"project_member", "rule:member and rule:owner"},
      {"compute:instances:create", "rule:admin_or_scheduler"},
      {"compute:instances:create:inline_flavor", "rule:admin_or_scheduler"},
      {"compute:instances:create:zero_disk_flavor", "rule:admin_or_scheduler"},
      {"compute:instances:delete", "rule:admin_or_scheduler"},
      {"compute:instances:show", "rule:admin_or_scheduler or rule:project_reader"},
      {"compute:instances:show:fault_details", "rule:admin_or_scheduler"},
      {"compute:instances:list", "rule:admin_or_scheduler or rule:reader"},
      {"compute:instances:console", "rule:admin_or_scheduler or rule:project_member"},
      {"compute:instances:action:reboot", "rule:admin_or_scheduler"},
      {"compute:instances:action:stop", "rule:admin_or_scheduler"},
      {"compute:instances:action:start", "rule:admin_or_scheduler"},
      {"compute:instances:action:snapshot", "rule:admin_or_scheduler"},
      {"compute:instances:action:attach_volume", "rule:admin_or_scheduler"},
      {"compute:instances:action:detach_volume", "rule:admin_or_scheduler"},
      {"compute:instances:interfaces:attach", "rule:admin_or_scheduler"},
      {"compute:instances:interfaces:detach", "rule:admin_or_scheduler"},
      {"compute:images:list", "rule:admin_or_scheduler"},
      {"compute:images:show", "rule:admin_or_scheduler"},
      {"compute:images:precache", "rule:admin_or_scheduler"},
      {"compute:images:evict", "rule:admin_or_scheduler"},
      {"compute:host:show", "rule:admin_or_scheduler"},
      {"compute:flavors:list", "rule:admin_or_scheduler or rule:reader"},
  };
  return rules;
}

namespace {

using Node = Policy::Node;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool isBlank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Quotes text from a policy file in a message: short, and without control characters.
std::string quote(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) {
    out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c;
  }
  if (s.size() > 80) out += "...";
  return "'" + out + "'";
}

// --- Tokens, split as oslo.policy splits them: on blanks, with leading '(' and trailing ')'
// peeled off each piece, and/or/not recognised in any case.

struct Token {
  enum class Kind { kOpen, kClose, kAnd, kOr, kNot, kCheck };
  Kind kind;
  std::string text;
};

std::vector<Token> tokenize(std::string_view rule) {
  std::vector<Token> tokens;
  std::size_t i = 0;
  while (i < rule.size()) {
    while (i < rule.size() && isBlank(rule[i])) ++i;
    std::size_t begin = i;
    while (i < rule.size() && !isBlank(rule[i])) ++i;
    std::string_view piece = rule.substr(begin, i - begin);
    while (!piece.empty() && piece.front() == '(') {
      tokens.push_back({Token::Kind::kOpen, "("});
      piece.remove_prefix(1);
    }
    std::size_t closing = 0;
    while (!piece.empty() && piece.back() == ')') {
      ++closing;
      piece.remove_suffix(1);
    }
    std::string word = lower(piece);
    if (word == "and") {
      tokens.push_back({Token::Kind::kAnd, "and"});
    } else if (word == "or") {
      tokens.push_back({Token::Kind::kOr, "or"});
    } else if (word == "not") {
      tokens.push_back({Token::Kind::kNot, "not"});
    } else if (!piece.empty()) {
      tokens.push_back({Token::Kind::kCheck, std::string(piece)});
    }
    for (std::size_t c = 0; c < closing; ++c) tokens.push_back({Token::Kind::kClose, ")"});
  }
  return tokens;
}

bool isAttributeName(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// The credentials kiln has to compare. Roles are checked with role:NAME.
bool isCredentialKey(std::string_view key) { return key == "project_id"; }

Result<Node> parseCheck(std::string_view text) {
  Node node;
  if (text == "@") return node;  // kAlways
  if (text == "!") {
    node.kind = Node::Kind::kNever;
    return node;
  }
  std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return Error::invalid(fmt::format(
        "{} is not a check; expected @, !, role:NAME, rule:NAME or KEY:VALUE", quote(text)));
  }
  std::string_view kind = text.substr(0, colon);
  std::string_view match = text.substr(colon + 1);
  if (match.empty()) return Error::invalid(fmt::format("The check {} has no value", quote(text)));
  if (kind == "rule") {
    node.kind = Node::Kind::kRule;
    node.value = std::string(match);
    return node;
  }
  if (kind == "role") {
    node.kind = Node::Kind::kRole;
    node.value = lower(match);
    return node;
  }
  if (!isCredentialKey(kind)) {
    return Error::invalid(
        fmt::format("The check {} compares {}, which kiln's credentials do not have (they have "
                    "role:NAME and project_id)",
                    quote(text), quote(kind)));
  }
  node.key = std::string(kind);
  if (match.starts_with("%(")) {
    if (!match.ends_with(")s") || !isAttributeName(match.substr(2, match.size() - 4))) {
      return Error::invalid(fmt::format(
          "The check {} must name a target attribute as %(NAME)s, the whole value", quote(text)));
    }
    node.kind = Node::Kind::kCredentialEqualsTarget;
    node.value = std::string(match.substr(2, match.size() - 4));
    return node;
  }
  if (match.size() >= 2 && (match.front() == '\'' || match.front() == '"') &&
      match.back() == match.front()) {
    match = match.substr(1, match.size() - 2);
  }
  if (match.empty() || match.find("%(") != std::string_view::npos) {
    return Error::invalid(fmt::format(
        "The check {} must compare with a non-empty literal or a whole %(NAME)s", quote(text)));
  }
  node.kind = Node::Kind::kCredentialEqualsLiteral;
  node.value = std::string(match);
  return node;
}

// Recursive descent with oslo.policy's precedence: or < and < not < parentheses.
class RuleParser {
 public:
  explicit RuleParser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Result<Node> parse() {
    if (tokens_.empty()) return Node{};  // "" is always, as in oslo.policy
    auto node = parseOr(0);
    if (!node) return node;
    if (pos_ < tokens_.size()) {
      return Error::invalid(
          fmt::format("Unexpected {} after a complete rule", quote(tokens_[pos_].text)));
    }
    return node;
  }

 private:
  bool next(Token::Kind kind) const { return pos_ < tokens_.size() && tokens_[pos_].kind == kind; }

  Result<Node> parseBinary(std::size_t depth, Token::Kind op, Node::Kind kind,
                           Result<Node> (RuleParser::*operand)(std::size_t)) {
    auto first = (this->*operand)(depth);
    if (!first || !next(op)) return first;
    Node combined;
    combined.kind = kind;
    combined.children.push_back(std::move(first).value());
    while (next(op)) {
      ++pos_;
      auto more = (this->*operand)(depth);
      if (!more) return more;
      combined.children.push_back(std::move(more).value());
    }
    return combined;
  }

  Result<Node> parseOr(std::size_t depth) {
    return parseBinary(depth, Token::Kind::kOr, Node::Kind::kOr, &RuleParser::parseAnd);
  }
  Result<Node> parseAnd(std::size_t depth) {
    return parseBinary(depth, Token::Kind::kAnd, Node::Kind::kAnd, &RuleParser::parseNot);
  }
  Result<Node> parseNot(std::size_t depth) {
    if (!next(Token::Kind::kNot)) return parsePrimary(depth);
    if (depth >= kMaxNesting) return tooDeep();
    ++pos_;
    auto operand = parseNot(depth + 1);
    if (!operand) return operand;
    Node node;
    node.kind = Node::Kind::kNot;
    node.children.push_back(std::move(operand).value());
    return node;
  }
  Result<Node> parsePrimary(std::size_t depth) {
    if (pos_ >= tokens_.size()) return Error::invalid("The rule ends where a check was expected");
    const Token& token = tokens_[pos_];
    if (token.kind == Token::Kind::kCheck) {
      ++pos_;
      return parseCheck(token.text);
    }
    if (token.kind != Token::Kind::kOpen) {
      return Error::invalid(
          fmt::format("Unexpected {} where a check was expected", quote(token.text)));
    }
    if (depth >= kMaxNesting) return tooDeep();
    ++pos_;
    auto inner = parseOr(depth + 1);
    if (!inner) return inner;
    if (!next(Token::Kind::kClose)) return Error::invalid("A '(' is not closed");
    ++pos_;
    return inner;
  }
  static Error tooDeep() {
    return Error::invalid(
        fmt::format("The rule nests parentheses or 'not' more than {} deep", kMaxNesting));
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
};

Result<Node> parseRule(std::string_view text) {
  if (text.size() > kMaxRuleTextBytes) {
    return Error::invalid(fmt::format("The rule is longer than {} bytes", kMaxRuleTextBytes));
  }
  return RuleParser(tokenize(text)).parse();
}

Error located(std::string_view source, std::size_t line, std::string_view message) {
  if (line == 0) return Error::invalid(fmt::format("{}: {}", source, message));
  return Error::invalid(fmt::format("{}:{}: {}", source, line, message));
}

bool evaluate(const Policy::Table& rules, const Node& node, const Credentials& credentials,
              const Target& target) {
  switch (node.kind) {
    case Node::Kind::kAlways:
      return true;
    case Node::Kind::kNever:
      return false;
    case Node::Kind::kRole:
      return std::any_of(credentials.roles.begin(), credentials.roles.end(),
                         [&](const std::string& role) { return lower(role) == node.value; });
    case Node::Kind::kRule:
      return evaluate(rules, rules.entries[node.rule].root, credentials, target);
    case Node::Kind::kCredentialEqualsTarget: {
      // A caller without a project owns nothing, and an instance without an owner (a record from
      // before projects) belongs to no project: neither side may match on emptiness.
      const std::string& mine = credentials.project_id;
      auto theirs = target.find(node.value);
      return !mine.empty() && theirs != target.end() && !theirs->second.empty() &&
             mine == theirs->second;
    }
    case Node::Kind::kCredentialEqualsLiteral:
      return !credentials.project_id.empty() && credentials.project_id == node.value;
    case Node::Kind::kAnd:
      return std::all_of(node.children.begin(), node.children.end(), [&](const Node& child) {
        return evaluate(rules, child, credentials, target);
      });
    case Node::Kind::kOr:
      return std::any_of(node.children.begin(), node.children.end(), [&](const Node& child) {
        return evaluate(rules, child, credentials, target);
      });
    case Node::Kind::kNot:
      return !evaluate(rules, node.children.front(), credentials, target);
  }
  return false;
}

void collectReferences(const Node& node, std::vector<const Node*>& out) {
  if (node.kind == Node::Kind::kRule) out.push_back(&node);
  for (const Node& child : node.children) collectReferences(child, out);
}

void resolveReferences(Node& node, const std::map<std::string, std::size_t, std::less<>>& index) {
  if (node.kind == Node::Kind::kRule) node.rule = index.find(node.value)->second;
  for (Node& child : node.children) resolveReferences(child, index);
}

struct RawRule {
  std::string name;
  std::string text;
  std::string source;
  std::size_t line = 0;
};

}  // namespace

Policy::Policy(std::shared_ptr<const Table> table) : table_(std::move(table)) {}

namespace {

// Parses every rule, checks the rule: references and their depth, and builds the table.
Result<std::shared_ptr<Policy::Table>> buildTable(std::vector<RawRule> raw) {
  auto table = std::make_shared<Policy::Table>();
  for (auto& r : raw) {
    auto root = parseRule(r.text);
    if (!root) {
      return located(
          r.source, r.line,
          fmt::format("The rule for '{}' does not parse: {}", r.name, root.error().message));
    }
    table->index.emplace(r.name, table->entries.size());
    table->entries.push_back({r.name, r.text, r.source, r.line, std::move(root).value()});
  }
  for (const auto& entry : table->entries) {
    std::vector<const Node*> refs;
    collectReferences(entry.root, refs);
    for (const Node* ref : refs) {
      if (table->index.count(ref->value) == 0) {
        return located(entry.source, entry.line,
                       fmt::format("The rule for '{}' refers to rule:{}, which is not defined",
                                   entry.name, ref->value));
      }
    }
  }
  // Depth-first over the references: a rule met again while still on the path is a cycle.
  enum class Mark { kNew, kOnPath, kDone };
  std::vector<Mark> marks(table->entries.size(), Mark::kNew);
  std::vector<std::size_t> depth(table->entries.size(), 0);
  std::vector<std::size_t> path;
  std::function<std::optional<Error>(std::size_t)> visit =
      [&](std::size_t i) -> std::optional<Error> {
    marks[i] = Mark::kOnPath;
    path.push_back(i);
    const auto& entry = table->entries[i];
    std::vector<const Node*> refs;
    collectReferences(entry.root, refs);
    for (const Node* ref : refs) {
      std::size_t j = table->index.find(ref->value)->second;
      if (marks[j] == Mark::kOnPath) {
        auto start = std::find(path.begin(), path.end(), j);
        std::string cycle;
        for (auto it = start; it != path.end(); ++it) {
          cycle += table->entries[*it].name + " -> ";
        }
        cycle += table->entries[j].name;
        const auto& first = table->entries[j];
        return located(first.source, first.line,
                       fmt::format("The rule for '{}' refers to itself: {}", first.name, cycle));
      }
      if (marks[j] == Mark::kNew) {
        if (path.size() >= kMaxReferenceDepth) {
          return located(entry.source, entry.line,
                         fmt::format("The rule for '{}' is reached through more than {} rule: "
                                     "references in a row",
                                     table->entries[j].name, kMaxReferenceDepth));
        }
        if (auto e = visit(j)) return e;
      }
      depth[i] = std::max(depth[i], depth[j] + 1);
      if (depth[i] > kMaxReferenceDepth) {
        return located(entry.source, entry.line,
                       fmt::format("The rule for '{}' follows more than {} rule: references in "
                                   "a row",
                                   entry.name, kMaxReferenceDepth));
      }
    }
    path.pop_back();
    marks[i] = Mark::kDone;
    return std::nullopt;
  };
  for (std::size_t i = 0; i < table->entries.size(); ++i) {
    if (marks[i] == Mark::kNew) {
      if (auto e = visit(i)) return *e;
    }
  }
  for (auto& entry : table->entries) resolveReferences(entry.root, table->index);
  return table;
}

std::vector<RawRule> builtInRules() {
  std::vector<RawRule> raw;
  for (const auto& [name, text] : Policy::defaultRules()) {
    raw.push_back({name, text, std::string(kBuiltInSource), 0});
  }
  return raw;
}

}  // namespace

const Policy& Policy::defaults() {
  static const Policy policy = [] {
    auto table = buildTable(builtInRules());
    // The built-in rules are constants checked by the unit tests; a failure is a build defect.
    if (!table) std::abort();
    return Policy(std::move(table).value());
  }();
  return policy;
}

Result<Policy> Policy::parse(std::string_view text, std::string_view source_name) {
  if (text.size() > kMaxPolicyFileBytes) {
    return located(source_name, 0,
                   fmt::format("The policy file is larger than {} bytes", kMaxPolicyFileBytes));
  }
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return located(source_name, static_cast<std::size_t>(std::max(e.mark.line, 0)) + 1,
                   fmt::format("The policy file does not parse: {}", e.msg));
  }
  std::vector<RawRule> raw = builtInRules();
  if (root.IsNull()) return Policy(*buildTable(std::move(raw)));  // an empty file: the defaults
  if (!root.IsMap()) {
    return located(source_name, static_cast<std::size_t>(std::max(root.Mark().line, 0)) + 1,
                   "A policy file is a mapping of rule names to rule strings");
  }
  if (root.size() > kMaxRules) {
    return located(source_name, 0,
                   fmt::format("The policy file has more than {} rules", kMaxRules));
  }
  const auto& operations = policyOperations();
  std::map<std::string, std::size_t> line_of;
  try {
    for (const auto& entry : root) {
      const YAML::Node key = entry.first;
      const YAML::Node value = entry.second;
      std::size_t line = static_cast<std::size_t>(std::max(key.Mark().line, 0)) + 1;
      if (!key.IsScalar() || key.Scalar().empty() || key.Scalar().size() > 255) {
        return located(source_name, line, "A rule name must be a string of 1 to 255 bytes");
      }
      const std::string& name = key.Scalar();
      if (name.starts_with("compute:") &&
          std::find(operations.begin(), operations.end(), name) == operations.end()) {
        return located(source_name, line,
                       fmt::format("'{}' is not an operation kiln knows; docs/policy.md lists "
                                   "them",
                                   name));
      }
      if (!value.IsScalar()) {
        return located(source_name, line,
                       fmt::format("The rule for '{}' must be a string (\"\" or \"@\" allows "
                                   "everyone, \"!\" no one)",
                                   name));
      }
      auto [previous, inserted] = line_of.emplace(name, line);
      if (!inserted) {
        return located(source_name, line,
                       fmt::format("The rule for '{}' is given again (first on line {})", name,
                                   previous->second));
      }
      RawRule rule{name, value.Scalar(), std::string(source_name), line};
      auto existing =
          std::find_if(raw.begin(), raw.end(), [&](const RawRule& r) { return r.name == name; });
      if (existing != raw.end()) {
        *existing = std::move(rule);
      } else {
        raw.push_back(std::move(rule));
      }
    }
  } catch (const YAML::Exception& e) {
    return located(source_name, static_cast<std::size_t>(std::max(e.mark.line, 0)) + 1,
                   fmt::format("The policy file does not parse: {}", e.msg));
  }
  auto table = buildTable(std::move(raw));
  if (!table) return table.error();
  return Policy(std::move(table).value());
}

Result<Policy> Policy::loadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd.valid()) {
    int err = errno;
    std::string message = fmt::format("Cannot open policy file '{}': {}", path, fs::errnoText(err));
    return err == ENOENT ? Error::notFound(std::move(message)) : Error::invalid(std::move(message));
  }
  // Whoever may write the policy decides who may call what: group or others must not.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Error::invalid(
        fmt::format("Cannot stat policy file '{}': {}", path, fs::errnoText(errno)));
  }
  if ((st.st_mode & 022) != 0) {
    return Error::invalid(fmt::format(
        "Policy file '{}' has mode {:04o}; it must not be writable by group or others (chmod go-w)",
        path, st.st_mode & 07777));
  }
  auto contents = fs::readAll(fd.get(), path, kMaxPolicyFileBytes, "policy file");
  if (!contents) return contents.error();
  return parse(*contents, path);
}

bool Policy::allows(std::string_view operation, const Credentials& credentials,
                    const Target& target) const {
  auto it = table_->index.find(operation);
  if (it == table_->index.end()) return false;
  return evaluate(*table_, table_->entries[it->second].root, credentials, target);
}

std::optional<std::string> Policy::ruleText(std::string_view name) const {
  auto it = table_->index.find(name);
  if (it == table_->index.end()) return std::nullopt;
  return table_->entries[it->second].text;
}

std::map<std::string, std::string> Policy::ruleTexts() const {
  std::map<std::string, std::string> texts;
  for (const auto& entry : table_->entries) texts[entry.name] = entry.text;
  return texts;
}

}  // namespace kiln::rpc
