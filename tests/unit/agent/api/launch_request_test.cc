#include <catch2/catch.hpp>

#include "agent/api/launch_request.h"

using kiln::api::parseLaunchRequest;
using kiln::config::Flavor;
using kiln::config::FlavorCatalog;

namespace {
FlavorCatalog catalog() {
  Flavor tiny;
  tiny.name = "m1.tiny";
  tiny.vcpus = 1;
  tiny.memory_mb = 512;
  tiny.root_gb = 1;
  return FlavorCatalog({tiny});
}
}  // namespace

TEST_CASE("a launch by flavor name is parsed", "[request]") {
  auto r = parseLaunchRequest(
      R"({"uuid":"0D2C6B4E-9C1F-4A52-9E51-3A7F7C1F2B10","name":"web-1","flavor":"m1.tiny",)"
      R"("image":{"id":"cirros-0.6"}})",
      catalog());
  REQUIRE(r.ok());
  CHECK(r->uuid == "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10");
  CHECK(r->name == "web-1");
  CHECK(r->flavor.name == "m1.tiny");
  CHECK(r->flavor.memory_mb == 512);
  CHECK(r->image_id == "cirros-0.6");
}

TEST_CASE("an inline flavor is parsed and bounded", "[request]") {
  auto r = parseLaunchRequest(
      R"({"uuid":"0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10","name":"x","image":{"id":"i"},)"
      R"("flavor":{"vcpus":2,"memory_mb":256,"root_gb":1,"ephemeral_gb":2}})",
      catalog());
  REQUIRE(r.ok());
  CHECK(r->flavor.name.empty());
  CHECK(r->flavor.vcpus == 2);
  CHECK(r->flavor.ephemeral_gb == 2);
}

TEST_CASE("the fingerprint ignores the case of the uuid and the order of keys", "[request]") {
  auto a = parseLaunchRequest(
      R"({"uuid":"0D2C6B4E-9C1F-4A52-9E51-3A7F7C1F2B10","name":"x","flavor":"m1.tiny","image":{"id":"i"}})",
      catalog());
  auto b = parseLaunchRequest(
      R"({"image":{"id":"i"},"flavor":"m1.tiny","name":"x","uuid":"0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10"})",
      catalog());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->fingerprint == b->fingerprint);
  auto c = parseLaunchRequest(
      R"({"image":{"id":"i"},"flavor":"m1.tiny","name":"y","uuid":"0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10"})",
      catalog());
  REQUIRE(c.ok());
  CHECK(a->fingerprint != c->fingerprint);
}

TEST_CASE("bad launch requests are refused with a reason", "[request]") {
  const char* uuid = R"("uuid":"0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10")";
  // Appended from a std::string on the left: "{" + std::string(...) draws a false -Wrestrict
  // from GCC 12 at -O3 (GCC bug 105329).
  auto body = [&](const std::string& rest) { return std::string("{") + uuid + "," + rest + "}"; };
  struct Case {
    std::string body;
    const char* expected;
  };
  std::vector<Case> cases = {
      {"not json", "not valid JSON"},
      {"[1,2]", "JSON object"},
      {R"({"uuid":"nope","name":"x","flavor":"m1.tiny","image":{"id":"i"}})", "'uuid'"},
      {R"({"uuid":7,"name":"x","flavor":"m1.tiny","image":{"id":"i"}})", "'uuid'"},
      {R"({"name":"x","flavor":"m1.tiny","image":{"id":"i"}})", "'uuid'"},
      {body(R"("name":"","flavor":"m1.tiny","image":{"id":"i"})"), "'name'"},
      {body(R"("name":"a\nb","flavor":"m1.tiny","image":{"id":"i"})"), "'name'"},
      {body(R"("name":["x"],"flavor":"m1.tiny","image":{"id":"i"})"), "'name'"},
      {body(R"("name":"x","flavor":"m9.huge","image":{"id":"i"})"), "Unknown flavor"},
      {body(R"("name":"x","flavor":3,"image":{"id":"i"})"), "'flavor'"},
      {body(R"("name":"x","flavor":{"vcpus":"1","memory_mb":1,"root_gb":1},"image":{"id":"i"})"),
       "flavor.vcpus"},
      {body(R"("name":"x","flavor":{"vcpus":1,"memory_mb":512,"root_gb":-1},"image":{"id":"i"})"),
       "flavor.root_gb"},
      {body(R"("name":"x","flavor":{"vcpus":1.5,"memory_mb":512,"root_gb":1},"image":{"id":"i"})"),
       "flavor.vcpus"},
      {body(
           R"("name":"x","flavor":{"vcpus":99999,"memory_mb":512,"root_gb":1},"image":{"id":"i"})"),
       "vcpus"},
      {body(
           R"("name":"x","flavor":{"vcpus":1,"memory_mb":512,"root_gb":1,"gpu":1},"image":{"id":"i"})"),
       "unknown field 'gpu'"},
      {body(R"("name":"x","flavor":"m1.tiny","image":"i")"), "'image'"},
      {body(R"("name":"x","flavor":"m1.tiny","image":{"id":"../../etc/passwd"})"), "'image.id'"},
      {body(R"("name":"x","flavor":"m1.tiny","image":{"id":""})"), "'image.id'"},
      {body(R"("name":"x","flavor":"m1.tiny","image":{"id":"i"},"extra":1)"),
       "Unknown field 'extra'"},
  };
  for (const auto& c : cases) {
    auto r = parseLaunchRequest(c.body, catalog());
    INFO(c.body);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == kiln::ErrorCode::kInvalidArgument);
    INFO(r.error().message);
    CHECK(r.error().message.find(c.expected) != std::string::npos);
  }
}

namespace {
std::string volumeBody(const std::string& block_devices, bool with_image = true,
                       const std::string& flavor = "\"m1.tiny\"") {
  return std::string(R"({"uuid":"0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10","name":"v","flavor":)") +
         flavor + (with_image ? R"(,"image":{"id":"i"})" : "") + R"(,"block_devices":)" +
         block_devices + "}";
}
std::string bdm(const std::string& volume, const std::string& extra = "",
                const std::string& auth = "") {
  return R"({"volume_id":")" + volume +
         R"(","connection_info":{"driver_volume_type":"iscsi","data":{"target_portal":"127.0.0.1:3260","target_iqn":"iqn.2010-10.org.openstack:)" +
         volume + R"(","target_lun":1)" + auth + "}}" + extra + "}";
}
}  // namespace

TEST_CASE("volumes take vdc, vdd, ... in order unless named", "[request][volumes]") {
  auto r = parseLaunchRequest(
      volumeBody("[" + bdm("a") + "," + bdm("b", R"(,"device_name":"/dev/vdc")") + "," + bdm("c") +
                 "]"),
      catalog());
  REQUIRE(r.ok());
  REQUIRE(r->block_devices.size() == 3);
  CHECK(r->block_devices[0].device == "vdd");
  CHECK(r->block_devices[1].device == "vdc");
  CHECK(r->block_devices[2].device == "vde");
  CHECK(r->block_devices[0].target.paths[0].lun == 1);
  CHECK(r->block_devices[0].target.paths[0].port == 3260);
}

TEST_CASE("an ephemeral disk keeps vdb, the first volume is still vdc", "[request][volumes]") {
  auto r =
      parseLaunchRequest(volumeBody("[" + bdm("a") + "]", true,
                                    R"({"vcpus":1,"memory_mb":256,"root_gb":1,"ephemeral_gb":1})"),
                         catalog());
  REQUIRE(r.ok());
  CHECK(r->block_devices[0].device == "vdc");
}

TEST_CASE("boot from volume needs no image, the volume is vda", "[request][volumes]") {
  auto r = parseLaunchRequest(volumeBody("[" + bdm("root", R"(,"boot_index":0)") + "," +
                                             bdm("data", R"(,"boot_index":-1)") + "]",
                                         false),
                              catalog());
  REQUIRE(r.ok());
  CHECK(r->image_id.empty());
  CHECK(r->block_devices[0].boot);
  CHECK(r->block_devices[0].device == "vda");
  CHECK(r->block_devices[1].device == "vdc");
}

TEST_CASE("CHAP credentials are parsed but the fingerprint does not hold them",
          "[request][volumes]") {
  std::string auth =
      R"(,"auth_method":"CHAP","auth_username":"user1","auth_password":"s3cret-pa55word")";
  auto r = parseLaunchRequest(volumeBody("[" + bdm("a", "", auth) + "]"), catalog());
  REQUIRE(r.ok());
  CHECK(r->block_devices[0].target.auth_username == "user1");
  CHECK(r->block_devices[0].target.auth_password == "s3cret-pa55word");
  CHECK(r->fingerprint.size() == 64);
  CHECK(r->fingerprint.find("s3cret") == std::string::npos);
}

TEST_CASE("bad block devices are refused with a reason", "[request][volumes]") {
  struct Case {
    std::string body;
    const char* expected;
  };
  std::vector<Case> cases = {
      {volumeBody("{}"), "'block_devices'"},
      {volumeBody("[" + bdm("a", R"(,"boot_index":0)") + "]"), "either 'image' or a boot volume"},
      {volumeBody("[" + bdm("a") + "]", false), "'image' is required"},
      {volumeBody("[" + bdm("a", R"(,"boot_index":0)") + "," + bdm("b", R"(,"boot_index":0)") + "]",
                  false),
       "Only one block device"},
      {volumeBody("[" + bdm("a") + "," + bdm("a") + "]"), "more than once"},
      {volumeBody("[" + bdm("a", R"(,"device_name":"vda")") + "]"), "already in use"},
      {volumeBody("[" + bdm("a", R"(,"device_name":"sdb")") + "]"), "device_name"},
      {volumeBody("[" + bdm("a", R"(,"extra":1)") + "]"), "unknown field 'extra'"},
      {volumeBody("[" + bdm("a", "", R"(,"auth_method":"CHAP")") + "]"), "auth_username"},
      {volumeBody("[" + bdm("a", "", R"(,"auth_method":"kerberos")") + "]"), "auth_method"},
      {volumeBody(
           "[" +
           bdm("a", "",
               R"(,"auth_method":"CHAP","auth_username":"u","auth_password":"pw\nnode.startup = automatic")") +
           "]"),
       "control characters"},
      {volumeBody("[" +
                  bdm("a", "",
                      R"(,"auth_method":"CHAP","auth_username":"u","auth_password":"pw\u0000x")") +
                  "]"),
       "control characters"},
      {volumeBody(
           R"([{"volume_id":"a","connection_info":{"driver_volume_type":"rbd","data":{}}}])"),
       "'iscsi'"},
      {volumeBody(
           R"([{"volume_id":"a","connection_info":{"driver_volume_type":"iscsi","data":{"target_portal":"127.0.0.1:99999","target_iqn":"iqn.x:y","target_lun":1}}}])"),
       "port"},
      {volumeBody(
           R"([{"volume_id":"a","connection_info":{"driver_volume_type":"iscsi","data":{"target_portal":"127.0.0.1:3260","target_iqn":"not an iqn","target_lun":1}}}])"),
       "iSCSI name"},
      {volumeBody(
           R"([{"volume_id":"a","connection_info":{"driver_volume_type":"iscsi","data":{"target_portal":"h;rm -rf /:3260","target_iqn":"iqn.x:y","target_lun":1}}}])"),
       "invalid host"},
      {volumeBody(R"([{"volume_id":"../x","connection_info":{}}])"), "volume_id"},
  };
  for (const auto& c : cases) {
    auto r = parseLaunchRequest(c.body, catalog());
    INFO(c.body);
    REQUIRE_FALSE(r.ok());
    INFO(r.error().message);
    CHECK(r.error().message.find(c.expected) != std::string::npos);
  }
}

// Found while fuzzing the request parser: a body nested a few hundred thousand levels deep inside
// a volume's connection_info (which keeps unknown keys, as Cinder sends many) passed the checks,
// and serialising it for the fingerprint overflowed the stack, ending kilnd.
TEST_CASE("a body nested too deeply is refused before anything walks it", "[request]") {
  auto nested = [](std::size_t levels) {
    std::string deep = std::string(levels, '[') + std::string(levels, ']');
    return std::string(R"({"uuid":"0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10","name":"x",)") +
           R"("flavor":"m1.tiny","image":{"id":"i"},"block_devices":[{"volume_id":"a",)" +
           R"("connection_info":{"driver_volume_type":"iscsi","data":{)" +
           R"("target_portal":"127.0.0.1:3260","target_iqn":"iqn.2010-10.org.openstack:v",)" +
           R"("target_lun":1,"deep":)" + deep + "}}}]}";
  };
  auto r = parseLaunchRequest(nested(400000), catalog());  // 800 KB, under the body limit
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "The request body is nested deeper than 32 levels");
  // "deep" sits 5 levels down: 27 more levels make 32, one more is refused.
  CHECK(parseLaunchRequest(nested(27), catalog()).ok());
  CHECK_FALSE(parseLaunchRequest(nested(28), catalog()).ok());
  CHECK_FALSE(kiln::api::parseRequestJson(std::string(100, '{')).ok());
  CHECK(kiln::api::parseRequestJson("[[[1]]]").ok());
}

namespace {

nlohmann::json goodVif() {
  return nlohmann::json::parse(R"({
    "id": "9d0e7b0a-1111-4222-8333-444455556666", "address": "FA:16:3E:01:02:03",
    "type": "bridge", "devname": "tap9d0e7b0a-11", "vnic_type": "normal",
    "details": {"port_filter": true},
    "network": {"id": "net-1", "bridge": "brq-net1", "label": "private",
                "meta": {"mtu": 1450},
                "subnets": [{"cidr": "198.51.100.0/24",
                             "gateway": {"address": "198.51.100.1", "type": "gateway"},
                             "ips": [{"address": "198.51.100.7", "type": "fixed"}],
                             "dns": [{"address": "203.0.113.53"}],
                             "routes": [{"cidr": "203.0.113.0/24",
                                         "gateway": {"address": "198.51.100.254"}}]}]}})");
}

kiln::Result<kiln::api::LaunchRequest> launchWith(const nlohmann::json& extra) {
  nlohmann::json body = {{"uuid", "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10"},
                         {"name", "Web Server #1"},
                         {"flavor", "m1.tiny"},
                         {"image", {{"id", "cirros"}}}};
  for (const auto& [k, v] : extra.items()) body[k] = v;
  return parseLaunchRequest(body.dump(), catalog());
}

}  // namespace

TEST_CASE("network_info VIFs are parsed into NICs and kept as given", "[request][network]") {
  auto r = launchWith({{"network_info", nlohmann::json::array({goodVif()})}});
  REQUIRE(r.ok());
  REQUIRE(r->interfaces.size() == 1);
  const auto& nic = r->interfaces[0].nic;
  CHECK(nic.port_id == "9d0e7b0a-1111-4222-8333-444455556666");
  CHECK(nic.mac == "fa:16:3e:01:02:03");
  CHECK(nic.type == kiln::drivers::NicSpec::Type::kBridge);
  CHECK(nic.devname == "tap9d0e7b0a-11");
  CHECK(nic.bridge == "brq-net1");
  CHECK(nic.mtu == 1450);
  CHECK_FALSE(nic.filter);  // Neutron filters (port_filter true)
  CHECK(nic.fixed_ips == std::vector<std::string>{"198.51.100.7"});
  CHECK(r->interfaces[0].vif == goodVif());
  CHECK(r->hostname == "web-server-1");

  SECTION("no devname: nova's tap + port id prefix; ethernet is a tap") {
    auto vif = goodVif();
    vif.erase("devname");
    vif["type"] = "ethernet";
    vif["details"] = nlohmann::json::object();
    auto t = launchWith({{"network_info", nlohmann::json::array({vif})}});
    REQUIRE(t.ok());
    CHECK(t->interfaces[0].nic.devname == "tap9d0e7b0a-11");
    CHECK(t->interfaces[0].nic.type == kiln::drivers::NicSpec::Type::kTap);
    CHECK(t->interfaces[0].nic.filter);
  }
}

TEST_CASE("bad VIFs are refused, naming the field", "[request][network]") {
  struct Case {
    const char* pointer;
    nlohmann::json value;
    const char* named;
  };
  const std::vector<Case> cases = {
      {"/address", "01:00:5e:00:00:01", "address"},
      {"/address", "ff:ff:ff:ff:ff:ff", "address"},
      {"/address", "00:00:00:00:00:00", "address"},
      {"/address", "fa:16:3e:01:02", "address"},
      {"/devname", "tap/../x", "devname"},
      {"/devname", "tap0123456789abc", "devname"},
      {"/devname", "-tap", "devname"},
      {"/network/bridge", "br with spaces", "bridge"},
      {"/network/bridge", "bridge-name-too-long", "bridge"},
      {"/network/meta/mtu", 70000, "mtu"},
      {"/network/meta/mtu", 67, "mtu"},
      {"/type", "vhostuser", "vhostuser"},
      {"/vnic_type", "direct", "vnic_type"},
      {"/network/subnets/0/cidr", "198.51.100.0/33", "cidr"},
      {"/network/subnets/0/ips/0/address", "198.51.100.300", "ips"},
      {"/network/subnets/0/ips/0/address", "2001:db8::1", "ips"},
      {"/network/subnets/0/gateway/address", "not-an-ip", "gateway"},
      {"/details/port_filter", "yes", "port_filter"},
      {"/id", "", "id"},
  };
  for (const auto& c : cases) {
    INFO(c.pointer << " = " << c.value.dump());
    auto vif = goodVif();
    vif[nlohmann::json::json_pointer(c.pointer)] = c.value;
    auto r = launchWith({{"network_info", nlohmann::json::array({vif})}});
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == kiln::ErrorCode::kInvalidArgument);
    CHECK_THAT(r.error().message, Catch::Matchers::Contains(c.named));
  }
  SECTION("a bridge VIF without a bridge, two VIFs with one MAC, an unknown field") {
    auto vif = goodVif();
    vif["network"].erase("bridge");
    CHECK_FALSE(launchWith({{"network_info", nlohmann::json::array({vif})}}).ok());
    auto second = goodVif();
    second["id"] = "other-port";
    second["devname"] = "tapother";
    CHECK_FALSE(launchWith({{"network_info", nlohmann::json::array({goodVif(), second})}}).ok());
    auto extra = goodVif();
    extra["surprise"] = 1;
    CHECK_FALSE(launchWith({{"network_info", nlohmann::json::array({extra})}}).ok());
  }
}

TEST_CASE("config drive fields: user_data base64 within nova's bound, keys, hostname",
          "[request][network]") {
  auto r = launchWith({{"config_drive", true},
                       {"hostname", "db-1.example"},
                       {"user_data", "I2Nsb3VkLWNvbmZpZwo="},
                       {"public_keys", {{"k1", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== me"}}}});
  REQUIRE(r.ok());
  CHECK(r->config_drive);
  CHECK(r->hostname == "db-1.example");
  REQUIRE(r->user_data);
  CHECK(*r->user_data == "#cloud-config\n");
  CHECK(r->public_keys.at("k1").starts_with("ssh-rsa "));
  CHECK_FALSE(launchWith({{"user_data", "not base64!"}}).ok());
  CHECK_FALSE(launchWith({{"user_data", std::string(65536, 'A')}}).ok());
  CHECK(launchWith({{"user_data", std::string(65532, 'A')}}).ok());
  CHECK_FALSE(launchWith({{"hostname", "-bad-"}}).ok());
  CHECK_FALSE(launchWith({{"public_keys", {{"k", "not a key"}}}}).ok());
  CHECK_FALSE(launchWith({{"public_keys", {{"k", "ssh-rsa AAAA\nssh-rsa BBBB"}}}}).ok());
  CHECK_FALSE(launchWith({{"config_drive", "yes"}}).ok());
  CHECK(kiln::api::hostnameFromName("", "0d2c6b4e-9c1f") == "instance-0d2c6b4e");
}
