#pragma once
// Every libvirt handle has an owner: a unique_ptr with a stateless deleter.

#include <libvirt/libvirt.h>

#include <cstdlib>
#include <memory>

namespace kiln::drivers::libvirt {

struct DomainFree {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using DomainHandle = std::unique_ptr<virDomain, DomainFree>;

struct SecretFree {
  void operator()(virSecretPtr s) const { virSecretFree(s); }
};
using SecretHandle = std::unique_ptr<virSecret, SecretFree>;

struct CharFree {
  void operator()(char* p) const { std::free(p); }
};
using LibvirtString = std::unique_ptr<char, CharFree>;

}  // namespace kiln::drivers::libvirt
