#pragma once
// Owners for libisofs's handles. Only drivers/configdrive includes libisofs.
//
// libisofs declares its own copy of libburn's struct burn_source (the image stream it hands out)
// when told that libburn is not in the build.
#define LIBISOFS_WITHOUT_LIBBURN 1
#include <libisofs/libisofs.h>

#include <cstdlib>
#include <memory>

namespace kiln::drivers::configdrive {

struct IsoImageUnref {
  void operator()(IsoImage* image) const { iso_image_unref(image); }
};
struct IsoWriteOptsFree {
  void operator()(IsoWriteOpts* opts) const { iso_write_opts_free(opts); }
};
struct IsoStreamUnref {
  void operator()(IsoStream* stream) const { iso_stream_unref(stream); }
};
// What libburn's burn_source_free() does. free_data stops and joins libisofs's writer thread
// when the stream was not read to its end, so dropping a half-read image is safe.
struct BurnSourceFree {
  void operator()(burn_source* source) const {
    if (--source->refcount > 0) return;
    if (source->free_data != nullptr) source->free_data(source);
    std::free(source);  // NOLINT(cppcoreguidelines-no-malloc): libisofs allocated it with malloc
  }
};

using IsoImagePtr = std::unique_ptr<IsoImage, IsoImageUnref>;
using IsoWriteOptsPtr = std::unique_ptr<IsoWriteOpts, IsoWriteOptsFree>;
using IsoStreamPtr = std::unique_ptr<IsoStream, IsoStreamUnref>;
using BurnSourcePtr = std::unique_ptr<burn_source, BurnSourceFree>;

}  // namespace kiln::drivers::configdrive
