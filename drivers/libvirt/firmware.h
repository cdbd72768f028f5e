#pragma once
// Which UEFI firmware a guest gets, and whether the host can run a machine type. kiln picks the
// firmware files itself from QEMU's firmware descriptors (docs/interop/firmware.json in QEMU) and
// writes their paths into the domain, rather than letting libvirt autoselect: the choice is then
// explicit in the XML, the same on every define, and testable without libvirt.

#include <string>
#include <vector>

#include "common/result.h"

namespace kiln::drivers::libvirt {

struct FirmwareChoice {
  std::string loader_path;          // the read-only code image (pflash)
  std::string nvram_template_path;  // copied by libvirt to the instance's own NVRAM file
  bool secure = false;              // secure boot: <loader secure='yes'>
  bool requires_smm = false;        // <features><smm state='on'/>
  // The descriptor it came from ("" for the [libvirt] uefi_loader override), for the log.
  std::string descriptor_path;
};

// /etc/qemu/firmware (the administrator's), then /usr/share/qemu/firmware (the packages').
std::vector<std::string> defaultFirmwareDescriptorDirs();

// Reads every *.json in `descriptor_dirs`; a file in an earlier directory hides a file of the
// same name in a later one (an empty file hides it and describes nothing, as in QEMU's spec).
// Descriptors are tried in file-name order; the first x86_64 "uefi" flash descriptor with an
// NVRAM template wins: without secure boot, one without the "secure-boot" feature; with secure
// boot, one with "secure-boot" and "requires-smm", preferring "enrolled-keys" (firmware whose
// varstore already holds Microsoft's keys; without keys the guest would start in setup mode and
// check nothing). `loader_override` and `nvram_template_override` ([libvirt] uefi_loader and
// uefi_nvram_template) replace the search; both or neither, and both must exist.
Result<FirmwareChoice> chooseUefiFirmware(const std::vector<std::string>& descriptor_dirs,
                                          bool secure_boot, const std::string& loader_override,
                                          const std::string& nvram_template_override);

// True when libvirt's capabilities XML (virConnectGetCapabilities) lists `machine` for an hvm
// guest of `arch` under `domain_type`, by name or alias (canonical attribute): pc, q35,
// pc-q35-7.2 all count. Machines listed under a <domain> element apply to that domain type only.
bool machineSupported(const std::string& caps_xml, const std::string& arch,
                      const std::string& domain_type, const std::string& machine);

}  // namespace kiln::drivers::libvirt
