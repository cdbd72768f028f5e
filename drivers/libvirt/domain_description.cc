// Reading back what kiln wrote into a domain's definition (domain_xml.cc is the other half).

#include <fmt/format.h>

#include <charconv>
#include <pugixml.hpp>

#include "drivers/libvirt/domain_spec.h"

namespace kiln::drivers::libvirt {
namespace {

std::uint64_t number(const char* text) {
  std::uint64_t value = 0;
  std::string_view s(text);
  std::from_chars(s.data(), s.data() + s.size(), value);
  return value;
}

// <memory unit='KiB'>262144</memory> in whatever unit libvirt chose to write back.
std::uint64_t memoryMb(pugi::xml_node memory) {
  std::uint64_t value = number(memory.child_value());
  std::string_view unit = memory.attribute("unit").value();
  if (unit == "MiB" || unit == "M") return value;
  if (unit == "GiB" || unit == "G") return value * 1024;
  if (unit == "b" || unit == "bytes") return value / (1024 * 1024);
  return value / 1024;  // KiB, libvirt's default
}

DiskSpec diskOf(pugi::xml_node node) {
  DiskSpec disk;
  const std::string_view type = node.attribute("type").value();
  disk.device = node.child("target").attribute("dev").value();
  disk.format = node.child("driver").attribute("type").value();
  disk.serial = node.child_value("serial");
  disk.read_only = static_cast<bool>(node.child("readonly"));
  disk.boot = static_cast<bool>(node.child("boot"));
  auto source = node.child("source");
  if (type == "network") {
    disk.source = DiskSpec::Source::kIscsi;
    disk.iscsi_name = source.attribute("name").value();
    for (auto host : source.children("host")) {
      disk.iscsi_hosts.push_back(
          {host.attribute("name").value(),
           static_cast<std::uint16_t>(number(host.attribute("port").as_string("3260")))});
    }
    if (auto auth = source.child("auth")) {
      disk.auth_username = auth.attribute("username").value();
      disk.secret_usage = auth.child("secret").attribute("usage").value();
    }
  } else if (type == "block") {
    disk.source = DiskSpec::Source::kBlock;
    disk.path = source.attribute("dev").value();
  } else {
    disk.source = DiskSpec::Source::kFile;
    disk.path = source.attribute("file").value();
    if (auto secret = source.child("encryption").child("secret")) {
      disk.encryption_secret_uuid = secret.attribute("uuid").value();
    }
    auto chain = node.child("backingStore");
    if (chain && chain.attribute("type")) {
      disk.backing_format = chain.child("format").attribute("type").value();
      disk.backing_path = chain.child("source").attribute("file").value();
    }
  }
  return disk;
}

}  // namespace

Result<DomainDescription> describeDomainXml(std::string_view xml) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size())) {
    return Error::internal("libvirt returned an unreadable domain definition");
  }
  auto domain = doc.child("domain");
  DomainDescription d;
  d.uuid = domain.child_value("uuid");
  // libvirt writes the metadata back under the prefix of its namespace, whatever it was called.
  pugi::xml_node meta;
  for (auto child : domain.child("metadata").children()) {
    for (auto attr : child.attributes()) {
      if (std::string_view(attr.value()) == kMetadataNamespace) meta = child;
    }
  }
  if (!meta) {
    return Error::notFound(
        fmt::format("Domain '{}' carries no kiln metadata: it is not kiln's", d.uuid));
  }
  const std::string prefix = std::string(meta.name()).substr(0, std::string(meta.name()).find(':'));
  auto child = [&](const char* name) { return meta.child((prefix + ":" + name).c_str()); };
  d.display_name = child("display_name").child_value();
  d.project_id = child("owner").attribute("project_id").value();
  d.image_id = child("image").attribute("id").value();
  d.flavor_name = child("flavor").attribute("name").value();
  d.created_at = child("created_at").child_value();
  d.vcpus = static_cast<unsigned>(number(domain.child_value("vcpu")));
  d.memory_mb = memoryMb(domain.child("memory"));
  for (auto node : domain.child("devices").children("disk")) {
    if (std::string_view(node.attribute("device").value()) == "cdrom") {
      d.cdrom_path = node.child("source").attribute("file").value();
      continue;
    }
    d.disks.push_back(diskOf(node));
  }
  return d;
}

}  // namespace kiln::drivers::libvirt
