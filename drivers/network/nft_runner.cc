#include "drivers/network/nft_runner.h"

#include <fmt/format.h>
#include <nftables/libnftables.h>

#include <memory>
#include <mutex>
#include <string>

namespace kiln::drivers::network {

namespace {

struct NftCtxDeleter {
  void operator()(nft_ctx* ctx) const { nft_ctx_free(ctx); }
};
using NftCtx = std::unique_ptr<nft_ctx, NftCtxDeleter>;

// libnftables 1.0.6 keeps process-wide state behind its contexts (the parser's symbol tables,
// GMP's allocator hooks, the cache of the kernel's ruleset is per context but its netlink
// sequence numbers are not documented as thread-safe), and its manual makes no promise about
// threads. A context per call and one call at a time; a batch takes about a millisecond.
std::mutex& nftMutex() {
  static std::mutex m;
  return m;
}

std::string trimmed(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<nlohmann::json> runNft(const nlohmann::json& commands) {
  std::lock_guard lock(nftMutex());
  NftCtx ctx(nft_ctx_new(NFT_CTX_DEFAULT));
  if (!ctx) return Error::internal("libnftables could not allocate a context");
  // With JSON output set, nft 1.0.6 also parses the input as JSON (it has no input flag yet).
  nft_ctx_output_set_flags(ctx.get(), NFT_CTX_OUTPUT_JSON);
  if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0) {
    return Error::internal("libnftables could not buffer its output");
  }
  const std::string text = commands.dump();
  if (nft_run_cmd_from_buffer(ctx.get(), text.c_str()) != 0) {
    return Error::unavailable(fmt::format("nftables refused the batch: {}",
                                          trimmed(nft_ctx_get_error_buffer(ctx.get()))));
  }
  std::string out = trimmed(nft_ctx_get_output_buffer(ctx.get()));
  if (out.empty()) return nlohmann::json();
  nlohmann::json parsed = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Error::internal(fmt::format("nftables answered with text that is not JSON: '{}'", out));
  }
  return parsed;
}

}  // namespace kiln::drivers::network
