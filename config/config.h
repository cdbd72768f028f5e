#pragma once
// kiln's configuration: a nova.conf-style INI file read into typed sections. Every option is
// documented with its default in config/kiln.conf; this header is the one place defaults live.

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace kiln::config {

struct DefaultSection {
  std::string state_path = "/var/lib/kiln";
  std::string host;  // empty: the machine's hostname
  std::string availability_zone = "nova";
  std::string flavors_file = "/etc/kiln/flavors.yaml";
  std::string log_level = "info";
  unsigned launch_workers = 4;
};

struct ApiSection {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8790;
  std::string token_file = "/etc/kiln/api-tokens";
  std::uint64_t max_body_bytes = 1024 * 1024;
};

struct LibvirtSection {
  std::string uri = "qemu:///system";
  std::string virt_type = "kvm";
  std::string hw_machine_type = "pc";
  std::string cpu_mode;  // empty: host-model under kvm, QEMU's default model under qemu
  unsigned keepalive_interval = 5;
  unsigned keepalive_count = 3;
};

struct ImagesSection {
  std::string local_dir = "/var/lib/kiln/images";
};

struct KilnConfig {
  DefaultSection defaults;
  ApiSection api;
  LibvirtSection libvirt;
  ImagesSection images;
  // Unknown options are not fatal (an operator may share one file between versions), but each
  // one is reported so a typo does not go unnoticed.
  std::vector<std::string> warnings;
};

// Errors name the option: "Invalid value 'xen' for [libvirt] virt_type: must be 'kvm' or 'qemu'".
Result<KilnConfig> loadConfigFile(const std::string& path);
Result<KilnConfig> parseConfig(std::string_view text, std::string_view source_name);

// Every option kilnd reads, as "section.name" (for docs checks and --help).
std::vector<std::string> knownOptions();

}  // namespace kiln::config
