#include <catch2/catch.hpp>

#include "config/flavors.h"

using kiln::config::parseFlavors;

TEST_CASE("the shipped catalog holds the five classic flavors", "[flavors]") {
  auto catalog = kiln::config::loadFlavorFile(KILN_SOURCE_DIR "/config/flavors.yaml");
  REQUIRE(catalog.ok());
  REQUIRE(catalog->all().size() == 5);
  struct Expected {
    const char* name;
    unsigned vcpus;
    std::uint64_t ram, root;
  };
  for (auto e : {Expected{"m1.tiny", 1, 512, 1}, Expected{"m1.small", 1, 2048, 20},
                 Expected{"m1.medium", 2, 4096, 40}, Expected{"m1.large", 4, 8192, 80},
                 Expected{"m1.xlarge", 8, 16384, 160}}) {
    auto f = catalog->find(e.name);
    REQUIRE(f);
    CHECK(f->vcpus == e.vcpus);
    CHECK(f->memory_mb == e.ram);
    CHECK(f->root_gb == e.root);
    CHECK(f->ephemeral_gb == 0);
  }
}

TEST_CASE("bad flavor files are refused with a reason", "[flavors]") {
  auto check = [](const char* yaml, const char* expected) {
    auto c = parseFlavors(yaml, "f.yaml");
    REQUIRE_FALSE(c.ok());
    INFO(c.error().message);
    CHECK(c.error().message.find(expected) != std::string::npos);
  };
  check("flavors: [", "Cannot parse");
  check("nothing: 1", "under the key 'flavors'");
  check("flavors:\n  - {vcpus: 1, memory_mb: 512, root_gb: 1}", "has no name");
  check("flavors:\n  - {name: a, vcpus: 1, memory_mb: 512}", "root_gb");
  check("flavors:\n  - {name: a, vcpus: -1, memory_mb: 512, root_gb: 1}", "vcpus");
  check("flavors:\n  - {name: a, vcpus: 0, memory_mb: 512, root_gb: 1}", "vcpus");
  check("flavors:\n  - {name: a, vcpus: 1, memory_mb: 1, root_gb: 1}", "memory_mb");
  check(
      "flavors:\n  - {name: a, vcpus: 1, memory_mb: 64, root_gb: 1}\n"
      "  - {name: a, vcpus: 1, memory_mb: 64, root_gb: 1}",
      "more than once");
}

TEST_CASE("extra specs and ephemeral disks are read", "[flavors]") {
  auto c = parseFlavors(
      "flavors:\n  - name: e1\n    vcpus: 2\n    memory_mb: 256\n    root_gb: 1\n"
      "    ephemeral_gb: 3\n    extra_specs: {'hw:cpu_sockets': '1'}\n",
      "f.yaml");
  REQUIRE(c.ok());
  auto f = c->find("e1");
  REQUIRE(f);
  CHECK(f->ephemeral_gb == 3);
  CHECK(f->extra_specs.at("hw:cpu_sockets") == "1");
}

// Found by flavors_fuzz: looking up 'flavors' in a document that is not a map threw out of
// parseFlavors and ended kilnd with std::terminate instead of a message.
TEST_CASE("a flavor file that is not a map is refused with a message", "[flavors]") {
  for (const char* yaml : {"??", "just a string", "- a\n- b\n", "42"}) {
    auto c = parseFlavors(yaml, "f.yaml");
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().message.find("under the key 'flavors'") != std::string::npos);
  }
}
