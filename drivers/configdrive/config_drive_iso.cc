// The config drive as an ISO 9660 image, made in-process with libisofs: Rock Ridge and Joliet,
// volume id "config-2", like nova's `genisoimage -J -r -V config-2 -l -allow-lowercase`.
// The image is streamed into a temporary file beside `path` and renamed into place.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/random.h"
#include "common/unique_fd.h"
#include "drivers/configdrive/config_drive.h"
#include "drivers/configdrive/config_drive_layout.h"
#include "drivers/configdrive/isofs_handles.h"

namespace kiln::drivers::configdrive {
namespace {

// cloud-init's ConfigDrive datasource finds the drive by this filesystem label.
constexpr char kVolumeId[] = "config-2";
constexpr char kPublisher[] = "kiln";
constexpr std::size_t kSectorBytes = 2048;
constexpr std::size_t kWriteChunkBytes = 32 * kSectorBytes;

std::string isofsText(int code) {
  const char* text = iso_error_to_msg(code);
  return text != nullptr ? text : fmt::format("libisofs error {}", code);
}

// libisofs keeps process-wide state (its message queue, the default node builder) that iso_init
// sets up and iso_finish frees. It is set up once and never finished: a reference count would
// have to order every writer against the last one's iso_finish and the next one's iso_init, for
// the sake of a few kilobytes held until the process exits.
// Flag bit 0 keeps iso_init from calling setlocale(LC_CTYPE, ""): a library must not change the
// locale under a threaded daemon. Every name on the drive is ASCII, which the "C" locale's
// character set carries into Rock Ridge and Joliet unchanged.
Result<void> initLibisofs() {
  static std::once_flag once;
  static int status = 0;
  std::call_once(once, [] { status = iso_init_with_flag(1); });
  if (status < 0) {
    return Error::internal(fmt::format("Cannot initialise libisofs: {}", isofsText(status)));
  }
  return success();
}

Result<IsoStreamPtr> memoryStream(const std::string& contents, const std::string& path) {
  // The stream takes the buffer and free()s it; malloc(0) may return null, which it refuses.
  auto* buffer =
      static_cast<unsigned char*>(std::malloc(std::max<std::size_t>(contents.size(), 1)));
  if (buffer == nullptr) {
    return Error::exhausted(fmt::format("No memory for '{}' on the config drive", path));
  }
  std::copy(contents.begin(), contents.end(), buffer);  // bytes, not a C string
  IsoStream* stream = nullptr;
  if (int rc = iso_memory_stream_new(buffer, contents.size(), &stream); rc < 0) {
    std::free(buffer);  // only a stream that was made owns the buffer
    return Error::internal(
        fmt::format("libisofs cannot hold '{}' for the config drive: {}", path, isofsText(rc)));
  }
  return IsoStreamPtr(stream);
}

// The directory that holds `path`, made (with its parents) on first use. Directories are owned
// by the image's tree; `dirs` only remembers them.
Result<IsoDir*> parentDirectory(IsoImage* image, std::map<std::string, IsoDir*>& dirs,
                                const std::string& path) {
  std::size_t slash = path.rfind('/');
  std::string parent = slash == std::string::npos ? std::string() : path.substr(0, slash);
  if (auto it = dirs.find(parent); it != dirs.end()) return it->second;
  Result<IsoDir*> grandparent = parentDirectory(image, dirs, parent);
  if (!grandparent) return grandparent;
  std::string name = parent.substr(parent.rfind('/') + 1);
  IsoDir* dir = nullptr;
  if (int rc = iso_image_add_new_dir(image, *grandparent, name.c_str(), &dir); rc < 0) {
    return Error::internal(fmt::format("libisofs cannot add directory '{}' to the config drive: {}",
                                       parent, isofsText(rc)));
  }
  dirs.emplace(parent, dir);
  return dir;
}

Result<IsoImagePtr> buildImage(const std::vector<ConfigDriveFile>& files) {
  IsoImage* raw = nullptr;
  if (int rc = iso_image_new(kVolumeId, &raw); rc < 0) {
    return Error::internal(fmt::format("libisofs cannot start an image: {}", isofsText(rc)));
  }
  IsoImagePtr image(raw);
  iso_image_set_volume_id(image.get(), kVolumeId);
  iso_image_set_publisher_id(image.get(), kPublisher);
  iso_image_set_application_id(image.get(), kPublisher);

  std::map<std::string, IsoDir*> dirs{{"", iso_image_get_root(image.get())}};
  for (const ConfigDriveFile& file : files) {
    Result<IsoDir*> dir = parentDirectory(image.get(), dirs, file.path);
    if (!dir) return dir.error();
    Result<IsoStreamPtr> stream = memoryStream(file.contents, file.path);
    if (!stream) return stream.error();
    std::string name = file.path.substr(file.path.rfind('/') + 1);
    IsoFile* node = nullptr;
    if (int rc = iso_image_add_new_file(image.get(), *dir, name.c_str(), stream->get(), &node);
        rc < 0) {
      return Error::internal(fmt::format("libisofs cannot add '{}' to the config drive: {}",
                                         file.path, isofsText(rc)));
    }
    (void)stream->release();  // the file node holds the stream's reference now
  }
  return image;
}

Result<IsoWriteOptsPtr> writeOptions() {
  IsoWriteOpts* raw = nullptr;
  // Profile 2 ("distribution") replaces owners and modes with root and read-only defaults, as
  // genisoimage -r does: the guest sees no host uids.
  if (int rc = iso_write_opts_new(&raw, 2); rc < 0) {
    return Error::internal(fmt::format("libisofs cannot make write options: {}", isofsText(rc)));
  }
  IsoWriteOptsPtr opts(raw);
  // The plain ISO 9660 names are a fallback for readers without Rock Ridge or Joliet; level 2
  // keeps them at up to 31 characters (genisoimage -l) and in their own case (-allow-lowercase).
  iso_write_opts_set_iso_level(opts.get(), 2);
  iso_write_opts_set_allow_lowercase(opts.get(), 1);
  // ECMA-119 allows only d-characters in the volume id and libisofs would write CONFIG_2, which
  // cloud-init does not look for; genisoimage writes the label as given.
  iso_write_opts_set_relaxed_vol_atts(opts.get(), 1);
  // Joliet names without ";1", as genisoimage writes them.
  iso_write_opts_set_omit_version_numbers(opts.get(), 2);
  iso_write_opts_set_rockridge(opts.get(), 1);
  iso_write_opts_set_joliet(opts.get(), 1);
  iso_write_opts_set_replace_mode(opts.get(), 1, 1, 1, 1);
  return opts;
}

// The temporary image beside the target: removed unless it was renamed into place, so a failed
// write leaves nothing behind (a crash may leave a "*.tmp-*" file, never a partial `path`).
class TemporaryImage {
 public:
  explicit TemporaryImage(std::string path) : path_(std::move(path)) {}
  TemporaryImage(const TemporaryImage&) = delete;
  TemporaryImage& operator=(const TemporaryImage&) = delete;
  ~TemporaryImage() {
    fd_.reset();
    if (!kept_) ::unlink(path_.c_str());
  }

  // O_EXCL: a name that exists (a guess, a leftover) is never written through.
  Result<void> create() {
    fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd_.valid()) {
      kept_ = true;  // not ours to remove
      return Error::internal(
          fmt::format("Cannot create the config drive '{}': {}", path_, fs::errnoText(errno)));
    }
    // The umask may have taken bits; instance files are 0600 whatever it is (libvirt's DAC
    // driver gives the file to QEMU's user while the guest runs, as it does the instance's disks).
    if (::fchmod(fd_.get(), 0600) != 0) {
      return Error::internal(
          fmt::format("Cannot chmod the config drive '{}': {}", path_, fs::errnoText(errno)));
    }
    return success();
  }

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

  Result<void> renameTo(const std::string& target) {
    if (::fsync(fd_.get()) != 0) {
      return Error::internal(
          fmt::format("Cannot fsync the config drive '{}': {}", path_, fs::errnoText(errno)));
    }
    fd_.reset();
    if (::rename(path_.c_str(), target.c_str()) != 0) {
      return Error::internal(fmt::format("Cannot rename the config drive '{}' to '{}': {}", path_,
                                         target, fs::errnoText(errno)));
    }
    kept_ = true;
    std::filesystem::path dir = std::filesystem::path(target).parent_path();
    return fs::fsyncDirectory(dir.empty() ? std::filesystem::path(".") : dir);
  }

 private:
  std::string path_;
  UniqueFd fd_;
  bool kept_ = false;
};

Result<void> streamImage(burn_source* source, const TemporaryImage& out) {
  std::vector<unsigned char> chunk(kWriteChunkBytes);
  std::size_t filled = 0;
  auto flush = [&]() -> Result<void> {
    std::string_view bytes(reinterpret_cast<const char*>(chunk.data()), filled);
    filled = 0;
    return fs::writeAll(out.fd(), bytes, out.path());
  };
  for (;;) {
    int n = source->read_xt(source, chunk.data() + filled, static_cast<int>(kSectorBytes));
    if (n < 0) {
      return Error::internal(
          fmt::format("libisofs failed while making the config drive '{}'", out.path()));
    }
    if (n == 0) break;
    filled += static_cast<std::size_t>(n);
    if (filled + kSectorBytes > chunk.size()) {
      if (auto w = flush(); !w) return w;
    }
  }
  return flush();
}

}  // namespace

Result<void> writeConfigDrive(const ConfigDriveInput& input, const std::string& path) {
  // Refuse what cannot go on the drive before anything touches the filesystem.
  Result<std::vector<ConfigDriveFile>> files = configDriveFiles(input);
  if (!files) return files.error();
  if (auto init = initLibisofs(); !init) return init;
  // libisofs promises no thread safety, and ThreadSanitizer saw two writers race inside it
  // (iso_image_unref against another image's allocation). A drive takes ~2 ms: one at a time.
  static std::mutex libisofs_mutex;
  std::lock_guard libisofs_lock(libisofs_mutex);
  Result<IsoImagePtr> image = buildImage(*files);
  if (!image) return image.error();
  Result<IsoWriteOptsPtr> opts = writeOptions();
  if (!opts) return opts.error();

  TemporaryImage tmp(fmt::format("{}.tmp-{:016x}", path, randomU64()));
  if (auto c = tmp.create(); !c) return c;
  // libisofs generates the image on its own thread from here on; the source's deleter stops and
  // joins that thread, on every path out of this function.
  burn_source* raw_source = nullptr;
  if (int rc = iso_image_create_burn_source(image->get(), opts->get(), &raw_source); rc < 0) {
    return Error::internal(fmt::format("libisofs cannot start writing the config drive '{}': {}",
                                       path, isofsText(rc)));
  }
  BurnSourcePtr source(raw_source);
  if (auto s = streamImage(source.get(), tmp); !s) return s;
  source.reset();
  return tmp.renameTo(path);
}

}  // namespace kiln::drivers::configdrive
