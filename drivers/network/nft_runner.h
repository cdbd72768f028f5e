#pragma once
// Runs one nftables JSON transaction in-process through libnftables: no `nft` binary, no
// shell, and the kernel applies the whole batch or none of it.

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace kiln::drivers::network {

// Runs `commands` ({"nftables": [...]}) and returns what nft printed, parsed (a list command's
// answer; null when it printed nothing). kUnavailable when nft refuses the batch, with nft's
// own message quoted.
Result<nlohmann::json> runNft(const nlohmann::json& commands);

}  // namespace kiln::drivers::network
