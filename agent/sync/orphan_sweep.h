#pragma once
// Removes what a crash can leave that no instance owns, and only what is provably this kilnd's:
// domains named kiln-<uuid> whose files are under its instances directory, directories in that
// directory, and libvirt secrets whose description names it or whose usage is a path in it.
// Records of failed launches own nothing (their launch was rolled back).

#include "agent/lifecycle/instance_table.h"
#include "drivers/compute_driver.h"

namespace kiln::sync {

class OrphanSweep {
 public:
  OrphanSweep(lifecycle::InstanceTable& table, drivers::ComputeDriver& driver,
              std::string instances_dir);

  void run();

 private:
  lifecycle::InstanceTable& table_;
  drivers::ComputeDriver& driver_;
  const std::string instances_dir_;
};

}  // namespace kiln::sync
