#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <pugixml.hpp>
#include <sstream>

#include "common/command_runner.h"
#include "drivers/libvirt/domain_spec.h"
#include "temp_dir.h"

using kiln::drivers::DiskSpec;
using kiln::drivers::InstanceSpec;
using kiln::drivers::libvirt::domainSpecFor;
using kiln::drivers::libvirt::renderDomainXml;

namespace {

DiskSpec fileDisk(std::string device, std::string path, std::string format,
                  std::string backing = "", std::string backing_format = "") {
  DiskSpec d;
  d.device = std::move(device);
  d.path = std::move(path);
  d.format = std::move(format);
  d.backing_path = std::move(backing);
  d.backing_format = std::move(backing_format);
  d.boot = d.device == "vda";
  return d;
}

DiskSpec iscsiDisk(std::string device, bool chap) {
  DiskSpec d;
  d.device = std::move(device);
  d.source = DiskSpec::Source::kIscsi;
  d.format = "raw";
  d.iscsi_name = "iqn.2010-10.org.openstack:volume-1/1";
  d.iscsi_hosts.push_back({"127.0.0.1", 3260});
  d.serial = "volume-1";
  if (chap) {
    d.auth_username = "chapuser";
    d.secret_usage = "kiln-0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10-volume-1";
  }
  return d;
}

InstanceSpec basicInstance() {
  InstanceSpec spec;
  spec.uuid = "0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10";
  spec.display_name = "web-1";
  spec.vcpus = 2;
  spec.memory_mb = 256;
  spec.disks.push_back(fileDisk("vda",
                                "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/disk",
                                "qcow2", "/var/lib/kiln/_base/abc", "raw"));
  spec.disks.push_back(fileDisk(
      "vdb", "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/disk.local", "qcow2"));
  spec.console_log_path =
      "/var/lib/kiln/instances/0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10/console.log";
  spec.image_id = "cirros";
  spec.flavor_name = "m1.tiny";
  spec.created_at = "2026-11-26T00:00:00.000Z";
  return spec;
}

// Every generated document must pass libvirt's own RNG schema.
void requireSchemaValid(const std::string& xml) {
  kiln::testing::TempDir dir;
  std::string path = dir.path() + "/domain.xml";
  std::ofstream(path) << xml;
  kiln::PosixCommandRunner runner;
  kiln::CommandSpec cmd;
  cmd.argv = {"virt-xml-validate", path, "domain"};
  auto out = runner.run(cmd);
  REQUIRE(out.ok());
  INFO(out->stdout_text << out->stderr_text << xml);
  REQUIRE(out->succeeded());
}

// Golden files: the expected XML lives in tests/golden; KILN_REGENERATE=1 rewrites it, and the
// diff is reviewed like code.
void checkGolden(const std::string& name, const std::string& xml) {
  std::string path = std::string(KILN_SOURCE_DIR) + "/tests/golden/" + name + ".xml";
  if (std::getenv("KILN_REGENERATE") != nullptr) {
    std::ofstream(path) << xml;
  }
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream expected;
  expected << in.rdbuf();
  CHECK(xml == expected.str());
}

}  // namespace

TEST_CASE("a basic kvm domain matches its golden file and libvirt's schema", "[xml]") {
  std::string xml = renderDomainXml(domainSpecFor(basicInstance(), "kvm", "pc", ""));
  checkGolden("domain-kvm-basic", xml);
  requireSchemaValid(xml);
}

TEST_CASE("a qemu (TCG) domain has no host-model CPU", "[xml]") {
  std::string xml = renderDomainXml(domainSpecFor(basicInstance(), "qemu", "q35", ""));
  checkGolden("domain-qemu-q35", xml);
  requireSchemaValid(xml);
  CHECK(xml.find("host-model") == std::string::npos);
}

TEST_CASE("the XML matrix validates against libvirt's schema", "[xml]") {
  for (const char* type : {"kvm", "qemu"}) {
    for (const char* machine : {"pc", "q35"}) {
      for (const char* cpu : {"", "host-passthrough", "none"}) {
        for (bool ephemeral : {false, true}) {
          auto inst = basicInstance();
          if (!ephemeral) inst.disks.pop_back();
          std::string xml = renderDomainXml(domainSpecFor(inst, type, machine, cpu));
          INFO(type << " " << machine << " " << cpu << " " << ephemeral);
          requireSchemaValid(xml);
        }
      }
    }
  }
}

TEST_CASE("hostile names are escaped, never break the document", "[xml]") {
  auto inst = basicInstance();
  inst.display_name = "</title><devices><disk type='block'/>&\"'";
  inst.image_id = "a'b\"c<d>";
  std::string xml = renderDomainXml(domainSpecFor(inst, "kvm", "pc", ""));
  requireSchemaValid(xml);
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  CHECK(std::string(doc.child("domain").child_value("title")) == inst.display_name);
  CHECK(doc.select_nodes("//disk").size() == 2);
}

TEST_CASE("disk formats are always explicit, and the base is never relabelled", "[xml]") {
  std::string xml = renderDomainXml(domainSpecFor(basicInstance(), "kvm", "pc", ""));
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  for (auto disk : doc.select_nodes("//disk")) {
    CHECK(std::string(disk.node().child("driver").attribute("type").value()) == "qcow2");
  }
  auto backing = doc.select_node("//disk[target/@dev='vda']/backingStore");
  REQUIRE(backing);
  CHECK(std::string(backing.node().child("format").attribute("type").value()) == "raw");
  CHECK(std::string(
            backing.node().child("source").child("seclabel").attribute("relabel").value()) == "no");
  // vdb has an explicitly empty chain: libvirt must not look for one.
  auto vdb_chain = doc.select_node("//disk[target/@dev='vdb']/backingStore");
  REQUIRE(vdb_chain);
  CHECK_FALSE(vdb_chain.node().first_child());
}

TEST_CASE("iSCSI volumes: network disks with CHAP by secret usage, never a password", "[xml]") {
  auto inst = basicInstance();
  inst.disks.push_back(iscsiDisk("vdc", true));
  inst.disks.push_back(iscsiDisk("vdd", false));
  DiskSpec block;
  block.device = "vde";
  block.source = DiskSpec::Source::kBlock;
  block.format = "raw";
  block.path = "/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.2010-10.org.openstack:v-lun-1";
  block.read_only = true;
  inst.disks.push_back(block);
  std::string xml = renderDomainXml(domainSpecFor(inst, "kvm", "pc", ""));
  checkGolden("domain-volumes", xml);
  requireSchemaValid(xml);
}

TEST_CASE("a boot volume is the disk the firmware boots", "[xml]") {
  InstanceSpec inst = basicInstance();
  inst.disks.clear();
  DiskSpec root = iscsiDisk("vda", false);
  root.boot = true;
  inst.disks.push_back(root);
  std::string xml = renderDomainXml(domainSpecFor(inst, "qemu", "pc", ""));
  requireSchemaValid(xml);
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  CHECK(doc.select_node("//disk[@type='network'][target/@dev='vda']/boot[@order='1']"));
  CHECK_FALSE(doc.select_node("//os/boot"));
}

TEST_CASE("a single disk renders for hot-plug", "[xml]") {
  std::string xml = kiln::drivers::libvirt::renderDiskXml(iscsiDisk("vdc", true));
  pugi::xml_document doc;
  REQUIRE(doc.load_string(xml.c_str()));
  CHECK(std::string(doc.child("disk").attribute("type").value()) == "network");
  CHECK(std::string(doc.select_node("//auth/secret").node().attribute("usage").value()) ==
        "kiln-0d2c6b4e-9c1f-4a52-9e51-3a7f7c1f2b10-volume-1");
}
