// Stopping and starting the system libvirtd from a test, one way for every test that does it.
//
// A restart must wait for the old daemon to be gone before starting the new one: a libvirtd that
// is still shutting down holds /run/libvirtd.pid, so the new one refuses to start, and every
// test after it finds no libvirt at all.
#pragma once

#include <string>

namespace kiln::testing {

// SIGTERMs the libvirtd named by its pid file (not by name: other daemons are not ours) and
// waits until it has exited. Fails the test if it outlives the wait.
void stopLibvirtd();

// Starts libvirtd as scripts/start-services.sh does (logging to the same file) and waits until
// qemu:///system answers. Fails the test, with the daemon's log, if it does not.
void startLibvirtd();

inline void restartLibvirtd() {
  stopLibvirtd();
  startLibvirtd();
}

// Whether libvirtd runs, and the end of its log: for the message of a kilnd that found no
// libvirt, so a failure says which daemon went away and why.
std::string libvirtdDiagnosis();

}  // namespace kiln::testing
