#pragma once
// A typed model of the domain kiln defines. renderDomainXml() is the only code that turns it
// into XML, through pugixml, so escaping happens in one place and nothing is concatenated.

#include <cstdint>
#include <string>
#include <vector>

#include "drivers/compute_driver.h"

namespace kiln::drivers::libvirt {

inline constexpr const char* kMetadataNamespace = "https://kiln.dev/xmlns/libvirt/instance/1.0";
inline constexpr const char* kMetadataPrefix = "kiln";
inline constexpr const char* kDomainNamePrefix = "kiln-";

struct DomainSpec {
  std::string domain_type = "kvm";  // kvm, qemu, or test for libvirt's fake driver
  std::string name;                 // kiln-<uuid>
  std::string uuid;
  std::string title;  // the instance's display name, one line
  std::uint64_t memory_mib = 512;
  unsigned vcpus = 1;
  std::string arch = "x86_64";
  std::string machine_type = "pc";
  std::string cpu_mode;  // empty: none given
  std::vector<DiskSpec> disks;
  std::string console_log_path;
  // Metadata: whose domain this is.
  std::string image_id;
  std::string flavor_name;
  std::string created_at;
};

// Builds the spec from an instance; `domain_type` and machine/cpu defaults come from config.
DomainSpec domainSpecFor(const InstanceSpec& instance, const std::string& domain_type,
                         const std::string& machine_type, const std::string& cpu_mode);

std::string renderDomainXml(const DomainSpec& spec);
// One <disk> element, for hot-plug.
std::string renderDiskXml(const DiskSpec& disk);

}  // namespace kiln::drivers::libvirt
