#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "config/config.h"

using kiln::config::parseConfig;

TEST_CASE("an empty file gives the documented defaults", "[config]") {
  auto cfg = parseConfig("", "empty");
  REQUIRE(cfg.ok());
  CHECK(cfg->defaults.state_path == "/var/lib/kiln");
  CHECK(cfg->defaults.availability_zone == "nova");
  CHECK(cfg->api.listen_host == "127.0.0.1");
  CHECK(cfg->api.listen_port == 8790);
  CHECK(cfg->libvirt.uri == "qemu:///system");
  CHECK(cfg->libvirt.virt_type == "kvm");
  CHECK(cfg->warnings.empty());
}

TEST_CASE("sections and options are read", "[config]") {
  auto cfg = parseConfig(R"(
# comment
[DEFAULT]
state_path = /srv/kiln
host = compute-7
availability_zone = az2

[api]
listen = [::1]:9000
token_file = /etc/kiln/tokens

[libvirt]
uri = qemu:///session
virt_type = qemu

[images]
local_dir = /srv/images
)",
                         "test.conf");
  REQUIRE(cfg.ok());
  CHECK(cfg->defaults.state_path == "/srv/kiln");
  CHECK(cfg->defaults.host == "compute-7");
  CHECK(cfg->defaults.availability_zone == "az2");
  CHECK(cfg->api.listen_host == "::1");
  CHECK(cfg->api.listen_port == 9000);
  CHECK(cfg->api.token_file == "/etc/kiln/tokens");
  CHECK(cfg->libvirt.uri == "qemu:///session");
  CHECK(cfg->libvirt.virt_type == "qemu");
  CHECK(cfg->images.local_dir == "/srv/images");
}

TEST_CASE("an invalid value stops with a message naming the option", "[config]") {
  auto check = [](const char* text, const char* expected) {
    auto cfg = parseConfig(text, "bad.conf");
    REQUIRE_FALSE(cfg.ok());
    INFO(cfg.error().message);
    CHECK(cfg.error().message.find(expected) != std::string::npos);
  };
  check("[libvirt]\nvirt_type = xen\n", "[libvirt] virt_type");
  check("[api]\nlisten = 127.0.0.1\n", "[api] listen");
  check("[api]\nlisten = 127.0.0.1:99999\n", "[api] listen");
  check("[api]\nlisten = 127.0.0.1:http\n", "[api] listen");
  check("[DEFAULT]\nstate_path = relative/path\n", "[DEFAULT] state_path");
  check("[DEFAULT]\nlaunch_workers = 0\n", "[DEFAULT] launch_workers");
  check("[DEFAULT]\nlaunch_workers = -3\n", "[DEFAULT] launch_workers");
  check("[api]\nmax_body_bytes = 12abc\n", "[api] max_body_bytes");
  check("[DEFAULT]\nhost = two words\n", "[DEFAULT] host");
  check("[DEFAULT]\nlog_level = chatty\n", "[DEFAULT] log_level");
  check("[libvirt]\nuri = nonsense\n", "[libvirt] uri");
  check("[libvirt]\nvirt_type = qemu\nvirt_type = kvm\n", "[libvirt] virt_type");
}

TEST_CASE("an unknown option is warned about, not fatal", "[config]") {
  auto cfg = parseConfig("[libvirt]\nvirt_typo = qemu\n[nosuch]\nx = 1\n", "typo.conf");
  REQUIRE(cfg.ok());
  REQUIRE(cfg->warnings.size() == 2);
  CHECK(cfg->warnings[0].find("[libvirt] virt_typo") != std::string::npos);
}

TEST_CASE("a syntax error is reported with the file name", "[config]") {
  auto cfg = parseConfig("[api\nlisten=1\n", "broken.conf");
  REQUIRE_FALSE(cfg.ok());
  CHECK(cfg.error().message.find("broken.conf") != std::string::npos);
}

TEST_CASE("the sample kiln.conf is valid and documents every option", "[config]") {
  auto cfg = kiln::config::loadConfigFile(KILN_SOURCE_DIR "/config/kiln.conf");
  REQUIRE(cfg.ok());
  CHECK(cfg->warnings.empty());
}

TEST_CASE("kiln.conf lists every option kilnd reads", "[config]") {
  std::ifstream in(KILN_SOURCE_DIR "/config/kiln.conf");
  std::stringstream text;
  text << in.rdbuf();
  std::string sample = text.str();
  for (const auto& key : kiln::config::knownOptions()) {
    auto dot = key.find('.');
    std::string section = "[" + key.substr(0, dot) + "]";
    std::string option = "#" + key.substr(dot + 1) + " =";
    INFO(key);
    auto section_at = sample.find(section);
    REQUIRE(section_at != std::string::npos);
    CHECK(sample.find(option, section_at) != std::string::npos);
  }
}

// Found by config_fuzz: Boost's message for an unreadable line never finished building when the
// line held its own placeholder, so kilnd hung at startup instead of naming the line.
TEST_CASE("an unreadable line is named, whatever it holds", "[config]") {
  auto cfg = parseConfig("[api]\n# fine\n\n%%%%%%invalid_line%\x01\n", "odd.conf");
  REQUIRE_FALSE(cfg.ok());
  INFO(cfg.error().message);
  CHECK(cfg.error().message.find("odd.conf") != std::string::npos);
  CHECK(cfg.error().message.find("line 4") != std::string::npos);
  CHECK(cfg.error().message.find("'%%%%%%invalid_line%?'") != std::string::npos);

  auto empty_section = parseConfig("[]\nlisten = 127.0.0.1:1\n", "odd.conf");
  REQUIRE_FALSE(empty_section.ok());
  CHECK(empty_section.error().message.find("line 1") != std::string::npos);

  // What Boost accepts is still accepted: comments after values, blanks, CRLF line ends.
  auto ok = parseConfig("[api] \r\nlisten = 127.0.0.1:8791 # here\r\n\t\n", "ok.conf");
  REQUIRE(ok.ok());
  CHECK(ok->api.listen_port == 8791);
}
