#include <fmt/format.h>

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "config/config.h"
#include "tests/support/temp_dir.h"

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
    // Not "[" + key.substr(...): GCC 12 at -O3 warns falsely about that insert (-Wrestrict,
    // GCC bug 105329).
    std::string section = fmt::format("[{}]", key.substr(0, dot));
    std::string option = fmt::format("#{} =", key.substr(dot + 1));
    INFO(key);
    auto section_at = sample.find(section);
    REQUIRE(section_at != std::string::npos);
    CHECK(sample.find(option, section_at) != std::string::npos);
  }
}

TEST_CASE("the API's TLS, unix socket and limit options are read and checked", "[config]") {
  auto cfg = parseConfig(R"(
[api]
listen =
cert_file = /etc/kiln/api.pem
key_file = /etc/kiln/api.key
ca_file = /etc/kiln/clients-ca.pem
allow_insecure_http = true
listen_unix_socket = /run/kiln/api.sock
unix_socket_mode = 0640
unix_socket_group = kiln
max_header_bytes = 8192
client_timeout = 10
header_timeout = 5
max_connections = 64
max_connections_per_peer = 8
)",
                         "api.conf");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg.ok());
  CHECK(cfg->api.listen_host.empty());  // no TCP listener
  CHECK(cfg->api.cert_file == "/etc/kiln/api.pem");
  CHECK(cfg->api.key_file == "/etc/kiln/api.key");
  CHECK(cfg->api.ca_file == "/etc/kiln/clients-ca.pem");
  CHECK(cfg->api.allow_insecure_http);
  CHECK(cfg->api.listen_unix_socket == "/run/kiln/api.sock");
  CHECK(cfg->api.unix_socket_mode == 0640);
  CHECK(cfg->api.unix_socket_group == "kiln");
  CHECK(cfg->api.max_header_bytes == 8192);
  CHECK(cfg->api.client_timeout == 10);
  CHECK(cfg->api.header_timeout == 5);
  CHECK(cfg->api.max_connections == 64);
  CHECK(cfg->api.max_connections_per_peer == 8);

  auto defaults = parseConfig("", "empty");
  REQUIRE(defaults.ok());
  CHECK(defaults->api.unix_socket_mode == 0660);
  CHECK(defaults->api.max_header_bytes == 16384);
  CHECK(defaults->api.client_timeout == 30);
  CHECK(defaults->api.header_timeout == 10);
  CHECK(defaults->api.max_connections == 256);
  CHECK_FALSE(defaults->api.allow_insecure_http);

  auto check = [](const char* text, const char* expected) {
    auto bad = parseConfig(text, "bad.conf");
    REQUIRE_FALSE(bad.ok());
    INFO(bad.error().message);
    CHECK(bad.error().message.find(expected) != std::string::npos);
  };
  check("[api]\nlisten =\n", "nothing to listen on");
  check("[api]\ncert_file = /a.pem\n", "[api] cert_file and [api] key_file");
  check("[api]\nkey_file = /a.key\n", "[api] cert_file and [api] key_file");
  check("[api]\nca_file = /ca.pem\n", "[api] ca_file");
  check("[api]\ncert_file = a.pem\n", "[api] cert_file");
  check("[api]\nunix_socket_mode = 0999\n", "[api] unix_socket_mode");
  check("[api]\nunix_socket_mode = 01777\n", "[api] unix_socket_mode");
  check("[api]\nlisten_unix_socket = relative.sock\n", "[api] listen_unix_socket");
  check("[api]\nclient_timeout = 0\n", "[api] client_timeout");
  check("[api]\nheader_timeout = 0\n", "[api] header_timeout");
  check("[api]\nmax_header_bytes = 10\n", "[api] max_header_bytes");
  check("[api]\nmax_connections = 0\n", "[api] max_connections");
  check("[api]\nallow_insecure_http = maybe\n", "[api] allow_insecure_http");
}

TEST_CASE("the API worker pool and accept_token_file are read and checked", "[config]") {
  auto defaults = parseConfig("", "empty");
  REQUIRE(defaults.ok());
  CHECK(defaults->api.workers == 8);
  CHECK(defaults->api.max_queued_requests == 128);
  CHECK_FALSE(defaults->keystone.accept_token_file);

  auto cfg = parseConfig(
      "[api]\nworkers = 256\nmax_queued_requests = 0\n[keystone]\nauth_url = "
      "http://127.0.0.1:5000/v3\nservice_token_file = /etc/kiln/service-token\n"
      "accept_token_file = true\n",
      "pool.conf");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg.ok());
  CHECK(cfg->api.workers == 256);
  CHECK(cfg->api.max_queued_requests == 0);  // no queue: a busy pool answers 503 at once
  CHECK(cfg->keystone.accept_token_file);
  CHECK(cfg->warnings.empty());

  auto check = [](const char* text, const char* expected) {
    auto bad = parseConfig(text, "bad.conf");
    REQUIRE_FALSE(bad.ok());
    INFO(bad.error().message);
    CHECK(bad.error().message.find(expected) != std::string::npos);
  };
  check("[api]\nworkers = 0\n", "[api] workers");
  check("[api]\nworkers = 257\n", "[api] workers");
  check("[api]\nmax_queued_requests = -1\n", "[api] max_queued_requests");
  check("[api]\nmax_queued_requests = 65537\n", "[api] max_queued_requests");
  check("[keystone]\naccept_token_file = sometimes\n", "[keystone] accept_token_file");

  // Without Keystone the option means nothing; saying so beats silently ignoring it.
  auto alone = parseConfig("[keystone]\naccept_token_file = true\n", "alone.conf");
  REQUIRE(alone.ok());
  REQUIRE(alone->warnings.size() == 1);
  CHECK(alone->warnings[0].find("[keystone] accept_token_file") != std::string::npos);
}

TEST_CASE("the Keystone scopes that grant admin are read and checked", "[config]") {
  auto defaults = parseConfig("", "empty");
  REQUIRE(defaults.ok());
  CHECK(defaults->keystone.admin_project_name.empty());
  CHECK(defaults->keystone.admin_project_domain_name == "Default");
  CHECK(defaults->keystone.system_scope == "all");

  auto cfg = parseConfig(
      "[keystone]\nadmin_project_name = admin\nadmin_project_domain_name = ops\nsystem_scope =\n",
      "scope.conf");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg.ok());
  CHECK(cfg->keystone.admin_project_name == "admin");
  CHECK(cfg->keystone.admin_project_domain_name == "ops");
  CHECK(cfg->keystone.system_scope.empty());

  auto bad = parseConfig("[keystone]\nsystem_scope = domain\n", "bad.conf");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("[keystone] system_scope") != std::string::npos);
}

TEST_CASE("ephemeral_clear defaults to zero and takes only the three methods", "[config]") {
  auto cfg = parseConfig("", "kiln.conf");
  REQUIRE(cfg.ok());
  CHECK(cfg->libvirt.ephemeral_clear == "zero");
  CHECK_FALSE(cfg->ephemeral_storage_encryption.enabled);
  for (const char* method : {"none", "discard", "zero"}) {
    auto c = parseConfig(std::string("[libvirt]\nephemeral_clear = ") + method + "\n", "kiln.conf");
    REQUIRE(c.ok());
    CHECK(c->libvirt.ephemeral_clear == method);
  }
  auto bad = parseConfig("[libvirt]\nephemeral_clear = shred\n", "kiln.conf");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message ==
        "Invalid value 'shred' for [libvirt] ephemeral_clear: must be 'none', 'discard' or "
        "'zero'");
}

TEST_CASE("the encryption cipher and key size are checked together", "[config]") {
  auto cfg = parseConfig("[ephemeral_storage_encryption]\nenabled = true\n", "kiln.conf");
  REQUIRE(cfg.ok());
  const auto& enc = cfg->ephemeral_storage_encryption;
  CHECK(enc.enabled);
  CHECK(enc.cipher == "aes-xts-plain64");
  CHECK(enc.key_size == 512);
  CHECK(enc.luks.cipher_alg == "aes-256");
  CHECK(enc.luks.cipher_mode == "xts");
  CHECK(enc.luks.ivgen_alg == "plain64");
  CHECK(enc.luks.ivgen_hash_alg.empty());

  auto cbc = parseConfig(
      "[ephemeral_storage_encryption]\ncipher = serpent-cbc-essiv:sha256\nkey_size = 128\n",
      "kiln.conf");
  REQUIRE(cbc.ok());
  CHECK(cbc->ephemeral_storage_encryption.luks.cipher_alg == "serpent-128");
  CHECK(cbc->ephemeral_storage_encryption.luks.ivgen_alg == "essiv");
  CHECK(cbc->ephemeral_storage_encryption.luks.ivgen_hash_alg == "sha256");

  // The order of the two options in the file does not matter.
  auto reversed = parseConfig(
      "[ephemeral_storage_encryption]\nkey_size = 256\ncipher = aes-xts-plain\n", "kiln.conf");
  REQUIRE(reversed.ok());
  CHECK(reversed->ephemeral_storage_encryption.luks.cipher_alg == "aes-128");

  struct Bad {
    const char* text;
    const char* message;
  };
  for (const Bad& b : {
           Bad{"cipher = des-cbc-plain\n",
               "Invalid value 'des-cbc-plain' for [ephemeral_storage_encryption] cipher: the "
               "cipher must be aes, serpent or twofish"},
           Bad{"cipher = aes\n",
               "Invalid value 'aes' for [ephemeral_storage_encryption] cipher: must be "
               "<cipher>-<mode>-<iv generator> such as 'aes-xts-plain64'"},
           Bad{"cipher = aes-ecb-plain64\n",
               "Invalid value 'aes-ecb-plain64' for [ephemeral_storage_encryption] cipher: the "
               "mode must be xts or cbc"},
           Bad{"cipher = aes-xts-benbi\n",
               "Invalid value 'aes-xts-benbi' for [ephemeral_storage_encryption] cipher: the IV "
               "generator must be plain, plain64 or essiv"},
           Bad{"cipher = aes-cbc-plain64:sha256\n",
               "Invalid value 'aes-cbc-plain64:sha256' for [ephemeral_storage_encryption] "
               "cipher: only essiv takes a hash"},
           Bad{"key_size = 128\n",
               "Invalid value '128' for [ephemeral_storage_encryption] key_size: aes-xts-plain64 "
               "needs 256, 384 or 512"},
           Bad{"cipher = aes-cbc-essiv\nkey_size = 512\n",
               "Invalid value '512' for [ephemeral_storage_encryption] key_size: aes-cbc-essiv "
               "needs 128, 192 or 256"},
           Bad{"key_size = 1024\n",
               "Invalid value '1024' for [ephemeral_storage_encryption] key_size: must be between "
               "128 and 512"},
           Bad{"enabled = maybe\n",
               "Invalid value 'maybe' for [ephemeral_storage_encryption] enabled: must be true or "
               "false"},
       }) {
    auto c = parseConfig(std::string("[ephemeral_storage_encryption]\n") + b.text, "kiln.conf");
    INFO(b.text);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().message == b.message);
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

// One option of each kind, with the exact message an operator sees: the option table is built
// from a few typed binders, and a new option should read the same as its neighbours.
TEST_CASE("each kind of option keeps its rule and its message", "[config]") {
  struct Bad {
    std::string text;
    std::string message;
  };
  const std::string long_socket = std::string("/").append(107, 's');
  for (const Bad& b : std::initializer_list<Bad>{
           // Whole numbers in a range.
           {"[DEFAULT]\nlaunch_workers = 65\n",
            "Invalid value '65' for [DEFAULT] launch_workers: must be between 1 and 64"},
           {"[api]\nmax_body_bytes = 67108865\n",
            "Invalid value '67108865' for [api] max_body_bytes: must be between 1024 and "
            "67108864"},
           {"[api]\nmax_body_bytes = 12abc\n",
            "Invalid value '12abc' for [api] max_body_bytes: must be a whole number"},
           {"[glance]\nnum_retries = -1\n",
            "Invalid value '-1' for [glance] num_retries: must be a whole number"},
           {"[image_cache]\nmanager_interval = 604801\n",
            "Invalid value '604801' for [image_cache] manager_interval: must be -1 (never), 0 "
            "(every 60 s) or seconds"},
           {"[api]\nunix_socket_mode = 0999\n",
            "Invalid value '0999' for [api] unix_socket_mode: must be an octal file mode such as "
            "0660"},
           // Paths, required or optional.
           {"[DEFAULT]\nstate_path = relative/path\n",
            "Invalid value 'relative/path' for [DEFAULT] state_path: must be an absolute path"},
           {"[DEFAULT]\nflavors_file =\n",
            "Invalid value '' for [DEFAULT] flavors_file: must be an absolute path"},
           {"[keystone]\ncafile = ca.pem\n",
            "Invalid value 'ca.pem' for [keystone] cafile: must be an absolute path"},
           {"[api]\nlisten_unix_socket = " + long_socket + "\n",
            "Invalid value '" + long_socket +
                "' for [api] listen_unix_socket: must be at most 107 bytes long"},
           // Booleans and enumerations.
           {"[image_cache]\nremove_unused_base_images = sometimes\n",
            "Invalid value 'sometimes' for [image_cache] remove_unused_base_images: must be true "
            "or false"},
           {"[libvirt]\nvirt_type = xen\n",
            "Invalid value 'xen' for [libvirt] virt_type: must be 'kvm' or 'qemu'"},
           {"[libvirt]\niscsi_connector = iser\n",
            "Invalid value 'iser' for [libvirt] iscsi_connector: must be 'native' or 'kernel'"},
           {"[libvirt]\ncpu_mode = custom\n",
            "Invalid value 'custom' for [libvirt] cpu_mode: must be empty, 'host-model', "
            "'host-passthrough' or 'none'"},
           {"[DEFAULT]\nlog_level = chatty\n",
            "Invalid value 'chatty' for [DEFAULT] log_level: must be one of debug, info, "
            "warning, error"},
           // Text with a rule of its own.
           {"[DEFAULT]\navailability_zone =\n",
            "Invalid value '' for [DEFAULT] availability_zone: must be printable ASCII without "
            "spaces, at most 255 bytes"},
           {"[DEFAULT]\nhost = two words\n",
            "Invalid value 'two words' for [DEFAULT] host: must be printable ASCII without "
            "spaces, at most 255 bytes"},
           {"[DEFAULT]\nmy_block_storage_ip = 10.0.0.1 10.0.0.2\n",
            "Invalid value '10.0.0.1 10.0.0.2' for [DEFAULT] my_block_storage_ip: must be an IP "
            "address"},
           {"[libvirt]\nhw_machine_type =\n",
            "Invalid value '' for [libvirt] hw_machine_type: must be a machine type such as 'pc' "
            "or 'q35'"},
           {"[libvirt]\nuri = nonsense\n",
            "Invalid value 'nonsense' for [libvirt] uri: must be a libvirt URI such as "
            "qemu:///system"},
           {"[keystone]\nauth_url = ftp://keystone\n",
            "Invalid value 'ftp://keystone' for [keystone] auth_url: must be an http:// or "
            "https:// URL"},
           {"[api]\nunix_socket_group = two words\n",
            "Invalid value 'two words' for [api] unix_socket_group: must be a group name"},
           // Lists: a bad item is quoted with the whole list, or alone for paths.
           {"[glance]\napi_servers = http://a, ftp://b\n",
            "Invalid value 'http://a, ftp://b' for [glance] api_servers: each server must be an "
            "http:// or https:// URL"},
           {"[glance]\nallowed_direct_url_schemes = file, http\n",
            "Invalid value 'file, http' for [glance] allowed_direct_url_schemes: the only scheme "
            "kiln reads directly is 'file'"},
           {"[image_file_url]\nfilesystems = /srv/a, srv/b\n",
            "Invalid value 'srv/b' for [image_file_url] filesystems: must be an absolute path"},
       }) {
    auto c = parseConfig(b.text, "kiln.conf");
    INFO(b.text);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == kiln::ErrorCode::kInvalidArgument);
    CHECK(c.error().message == b.message);
  }

  auto cfg = parseConfig(R"(
[DEFAULT]
launch_workers = 64
force_raw_images = OFF
host =
[api]
max_body_bytes = 1024
unix_socket_mode = 0
cert_file =
key_file =
[libvirt]
cpu_mode =
iscsi_connector = kernel
[glance]
api_servers = http://a:9292 , ,https://b/
num_retries = 0
allowed_direct_url_schemes =
[image_file_url]
filesystems = /srv/images,/mnt/glance
[image_cache]
manager_interval = -1
remove_unused_base_images = no
remove_unused_original_minimum_age_seconds = 315360000
[keystone]
password = p@ss word
)",
                         "kiln.conf");
  INFO((cfg ? std::string() : cfg.error().message));
  REQUIRE(cfg.ok());
  CHECK(cfg->defaults.launch_workers == 64);
  CHECK_FALSE(cfg->defaults.force_raw_images);
  CHECK(cfg->defaults.host.empty());
  CHECK(cfg->api.max_body_bytes == 1024);
  CHECK(cfg->api.unix_socket_mode == 0);
  CHECK(cfg->libvirt.cpu_mode.empty());
  CHECK(cfg->libvirt.iscsi_connector == "kernel");
  CHECK(cfg->glance.api_servers == std::vector<std::string>{"http://a:9292", "https://b/"});
  CHECK(cfg->glance.num_retries == 0);
  CHECK(cfg->glance.allowed_direct_url_schemes.empty());
  CHECK(cfg->image_file_url.filesystems == std::vector<std::string>{"/srv/images", "/mnt/glance"});
  CHECK(cfg->image_cache.manager_interval == -1);
  CHECK_FALSE(cfg->image_cache.remove_unused_base_images);
  CHECK(cfg->image_cache.remove_unused_original_minimum_age_seconds == 315360000);
  CHECK(cfg->keystone.password == "p@ss word");

  // A secret is never quoted back.
  auto nul = parseConfig(std::string("[keystone]\npassword = se\0cret\n", 30), "kiln.conf");
  REQUIRE_FALSE(nul.ok());
  CHECK(nul.error().message == "[keystone] password contains a NUL byte");
}

TEST_CASE("a kiln.conf others may write, or read while it holds a secret, is refused", "[config]") {
  kiln::testing::TempDir dir;
  const std::string path = dir.path() + "/kiln.conf";
  std::ofstream(path) << "[libvirt]\nvirt_type = qemu\n";
  ::chmod(path.c_str(), 0644);
  CHECK(kiln::config::loadConfigFile(path).ok());  // no secret: readable is fine
  ::chmod(path.c_str(), 0664);
  auto writable = kiln::config::loadConfigFile(path);
  REQUIRE_FALSE(writable.ok());
  CHECK_THAT(writable.error().message, Catch::Contains("must not be writable by group or others"));

  std::ofstream(path, std::ios::app) << "[keystone]\nauth_url = http://127.0.0.1:5000/v3\n"
                                        "username = kiln\npassword = s3cret\n";
  ::chmod(path.c_str(), 0640);
  auto readable = kiln::config::loadConfigFile(path);
  REQUIRE_FALSE(readable.ok());
  CHECK_THAT(readable.error().message, Catch::Contains("holds [keystone] password"));
  CHECK_THAT(readable.error().message, Catch::Contains("chmod 600"));
  CHECK(readable.error().message.find("s3cret") == std::string::npos);
  ::chmod(path.c_str(), 0600);
  CHECK(kiln::config::loadConfigFile(path).ok());
}

TEST_CASE("the configuration file is read bounded, and a missing one says so", "[config]") {
  kiln::testing::TempDir dir;
  const std::string missing = dir.path() + "/kiln.conf";
  auto absent = kiln::config::loadConfigFile(missing);
  REQUIRE_FALSE(absent.ok());
  CHECK(absent.error().code == kiln::ErrorCode::kInvalidArgument);
  CHECK(absent.error().message == "Configuration file '" + missing + "' does not exist");

  // Exactly 1 MiB is read; one byte more is the wrong file, not a configuration.
  const std::string path = dir.path() + "/big.conf";
  std::string text = "[libvirt]\nvirt_type = qemu\n";
  text.append(1024 * 1024 - text.size(), '#');
  std::ofstream(path, std::ios::binary) << text;
  auto fits = kiln::config::loadConfigFile(path);
  INFO((fits ? std::string() : fits.error().message));
  REQUIRE(fits.ok());
  CHECK(fits->libvirt.virt_type == "qemu");

  std::ofstream(path, std::ios::binary | std::ios::app) << '#';
  auto big = kiln::config::loadConfigFile(path);
  REQUIRE_FALSE(big.ok());
  CHECK(big.error().code == kiln::ErrorCode::kInvalidArgument);
  CHECK(big.error().message == "Configuration file '" + path +
                                   "' is larger than 1048576 bytes, too large to be a kiln.conf");

  // A directory opens, but is not a file to read.
  auto directory = kiln::config::loadConfigFile(dir.path());
  REQUIRE_FALSE(directory.ok());
  CHECK(directory.error().message.starts_with("Cannot read configuration file: "));
  CHECK(directory.error().message.find(dir.path()) != std::string::npos);
}

TEST_CASE("the OpenStack front's options: nova.conf's names, the secrets and the placement rule",
          "[config]") {
  using kiln::config::parseConfig;
  auto cfg = parseConfig(
      "[DEFAULT]\ntransport_url = rabbit://nova:s3cret@127.0.0.1:5672/\nreport_interval = 5\n"
      "cpu_allocation_ratio = 4.0\nreserved_host_memory_mb = 256\n"
      "[oslo_messaging_rabbit]\namqp_durable_queues = true\nrabbit_quroum_max_memory_bytes = 1024\n"
      "[placement]\nauth_type = password\nauth_url = http://ks:5000/v3\nusername = nova\n"
      "password = pw\nproject_name = service\nvalid_interfaces = public\n",
      "kiln.conf");
  REQUIRE(cfg.ok());
  CHECK(cfg->defaults.report_interval == 5);
  REQUIRE(cfg->defaults.cpu_allocation_ratio.has_value());
  CHECK(*cfg->defaults.cpu_allocation_ratio == 4.0);
  CHECK_FALSE(cfg->defaults.ram_allocation_ratio.has_value());
  CHECK(cfg->defaults.reserved_host_memory_mb == 256);
  CHECK(cfg->oslo_messaging_rabbit.amqp_durable_queues);
  CHECK(cfg->oslo_messaging_rabbit.rabbit_quorum_max_memory_bytes == 1024);
  CHECK(cfg->placement.valid_interfaces == std::vector<std::string>{"public"});
  const auto secrets = kiln::config::secretOptionsIn(*cfg);
  CHECK(std::find(secrets.begin(), secrets.end(), "[DEFAULT] transport_url") != secrets.end());
  CHECK(std::find(secrets.begin(), secrets.end(), "[placement] password") != secrets.end());

  // transport_url without [placement]: refused, since a nova-compute must report to Placement.
  auto no_placement = parseConfig("[DEFAULT]\ntransport_url = rabbit://u:p@h/\n", "kiln.conf");
  REQUIRE_FALSE(no_placement.ok());
  CHECK(no_placement.error().message.find("[placement]") != std::string::npos);
  // Another driver: refused without quoting the URL (it may hold a password).
  auto other = parseConfig("[DEFAULT]\ntransport_url = amqp://u:pw@h/\n", "kiln.conf");
  REQUIRE_FALSE(other.ok());
  CHECK(other.error().message.find("pw") == std::string::npos);
  auto ratio = parseConfig("[DEFAULT]\ncpu_allocation_ratio = lots\n", "kiln.conf");
  REQUIRE_FALSE(ratio.ok());
  CHECK(ratio.error().message.find("cpu_allocation_ratio") != std::string::npos);
}
