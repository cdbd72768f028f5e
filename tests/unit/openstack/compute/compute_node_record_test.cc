// The compute node's fields as Nova's object holds them, what counts as a change, and the node
// uuid kept under state_path.

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/uuid.h"
#include "openstack/compute/compute_node_record.h"

namespace {

using nlohmann::json;
using namespace kiln::openstack;
namespace stdfs = std::filesystem;

compute::ComputeNodeFigures figures() {
  compute::ComputeNodeFigures f;
  f.hypervisor_hostname = "hv1";
  f.host_ip = "198.51.100.7";
  f.hypervisor_type = "QEMU";
  f.hypervisor_version = 7002000;
  f.vcpus = 2;
  f.memory_mb = 24000;
  f.local_gb = 100;
  f.memory_mb_used = 512;
  f.free_ram_mb = 23488;
  f.free_disk_gb = 100;
  f.cpu_info = {{"arch", "x86_64"}, {"model", "Broadwell"}};
  f.supported_hv_specs = {{"x86_64", "qemu", "hvm"}};
  f.stats = {{"num_instances", "0"}};
  return f;
}

struct TempDir {
  stdfs::path path = stdfs::temp_directory_path() / ("kiln-cn-" + kiln::randomUuid());
  TempDir() { stdfs::create_directories(path); }
  ~TempDir() { stdfs::remove_all(path); }
};

TEST_CASE("compute node: fields as Nova's ComputeNode 1.19 holds them") {
  const json created = compute::computeNodeFields(figures(), true, "host1", "uuid-1");
  CHECK(created["uuid"] == "uuid-1");
  CHECK(created["host"] == "host1");
  CHECK(created["metrics"] == "[]");
  CHECK(created["numa_topology"].is_null());
  CHECK(created["pci_device_pools"]["nova_object.name"] == "PciDevicePoolList");
  CHECK(created["pci_device_pools"]["nova_object.data"]["objects"] == json::array());
  // cpu_info is a string field holding JSON.
  REQUIRE(created["cpu_info"].is_string());
  CHECK(json::parse(created["cpu_info"].get<std::string>())["model"] == "Broadwell");
  REQUIRE(created["supported_hv_specs"].size() == 1);
  CHECK(created["supported_hv_specs"][0]["nova_object.name"] == "HVSpec");
  CHECK(created["supported_hv_specs"][0]["nova_object.version"] == "1.2");
  CHECK(created["supported_hv_specs"][0]["nova_object.data"] ==
        json{{"arch", "x86_64"}, {"hv_type", "qemu"}, {"vm_mode", "hvm"}});
  CHECK(created["stats"] == json{{"num_instances", "0"}});
  CHECK(created["host_ip"] == "198.51.100.7");

  // A report of an existing row never sends what only creation sets.
  const json updated = compute::computeNodeFields(figures(), false, "host1", "uuid-1");
  for (const char* field : {"uuid", "host", "metrics", "numa_topology", "pci_device_pools"})
    CHECK_FALSE(updated.contains(field));
  auto no_ip = figures();
  no_ip.host_ip.clear();
  CHECK(compute::computeNodeFields(no_ip, false, "h", "u")["host_ip"].is_null());
}

TEST_CASE("compute node: what Nova sends back equals what kiln wrote") {
  using compute::detail::comparable;
  // Nova's float fields come back as 16.0, its integers as integers.
  CHECK(comparable("cpu_allocation_ratio", json(16)) == comparable("cpu_allocation_ratio", 16.0));
  CHECK(comparable("vcpus", json(2)) != comparable("vcpus", json(3)));
  // cpu_info: the same JSON in other bytes.
  CHECK(comparable("cpu_info", R"({"model": "Broadwell", "arch": "x86_64"})") ==
        comparable("cpu_info", R"({"arch":"x86_64","model":"Broadwell"})"));
  CHECK(comparable("cpu_info", R"({"arch":"x86_64"})") !=
        comparable("cpu_info", R"({"arch":"aarch64"})"));
  // Object primitives compare by data, whatever their change lists.
  const json sent = compute::computeNodeFields(figures(), false, "h", "u")["supported_hv_specs"];
  json back = sent;
  back[0]["nova_object.changes"] = {"arch"};
  CHECK(comparable("supported_hv_specs", sent) == comparable("supported_hv_specs", back));
  back[0]["nova_object.data"]["hv_type"] = "kvm";
  CHECK(comparable("supported_hv_specs", sent) != comparable("supported_hv_specs", back));
}

TEST_CASE("compute node: the node uuid is made once and kept under state_path") {
  TempDir dir;
  auto first = compute::nodeUuid(dir.path);
  REQUIRE(first.ok());
  CHECK(kiln::canonicalUuid(*first) == *first);
  auto again = compute::nodeUuid(dir.path);
  REQUIRE(again.ok());
  CHECK(*again == *first);

  // A file an operator restored (upper case, no newline) is read as the same uuid.
  {
    std::ofstream out(dir.path / "compute_id", std::ios::trunc);
    out << "2C1F5E1A-6B47-4B5B-9E5D-0E3F7C9A1B2D";
  }
  auto restored = compute::nodeUuid(dir.path);
  REQUIRE(restored.ok());
  CHECK(*restored == "2c1f5e1a-6b47-4b5b-9e5d-0e3f7c9a1b2d");

  // Anything else is refused, and the file is left alone.
  {
    std::ofstream out(dir.path / "compute_id", std::ios::trunc);
    out << "not a uuid\n";
  }
  auto broken = compute::nodeUuid(dir.path);
  REQUIRE_FALSE(broken.ok());
  CHECK(broken.error().message.find("compute_id") != std::string::npos);
  std::ifstream in(dir.path / "compute_id");
  std::string kept;
  std::getline(in, kept);
  CHECK(kept == "not a uuid");
}

}  // namespace
