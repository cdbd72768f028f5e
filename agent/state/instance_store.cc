#include "agent/state/instance_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/unique_fd.h"

namespace kiln::state {
namespace {

struct StmtFinalize {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Statement = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

constexpr int kSchemaVersion = 1;

Error sqliteError(sqlite3* db, std::string_view what) {
  return Error::internal(fmt::format("Instance database: {} failed: {}", what, sqlite3_errmsg(db)));
}

Result<Statement> prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    return sqliteError(db, "prepare");
  }
  return Statement(raw);
}

Result<InstanceRecord> rowToRecord(sqlite3_stmt* stmt) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  if (text == nullptr) return Error::internal("Instance database holds an empty record");
  auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Error::internal("Instance database holds unreadable JSON");
  return fromJson(parsed);
}

// The first line of PRAGMA integrity_check's answer: "ok", or what is wrong.
Result<std::string> integrityCheck(sqlite3* db) {
  auto stmt = prepare(db, "PRAGMA integrity_check(1)");
  if (!stmt) return stmt.error();
  int rc = sqlite3_step(stmt->get());
  if (rc != SQLITE_ROW) return sqliteError(db, "integrity check");
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt->get(), 0));
  return std::string(text ? text : "");
}

Error corrupt(const std::string& path, std::string_view why) {
  return Error::internal(fmt::format(
      "Instance database '{}' is corrupt ({}); kilnd will not start without its records. Restore "
      "it from a backup (docs/operations.md)",
      path, why));
}

Result<SqliteHandle> openHandle(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteHandle db(raw);
  if (rc != SQLITE_OK) {
    return Error::internal(fmt::format("Cannot open instance database '{}': {}", path,
                                       raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3_busy_timeout(db.get(), 5000);
  return db;
}

}  // namespace

Result<bool> InstanceStore::exists(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return Error::internal(
        fmt::format("Cannot read instance database '{}': {}", path, fs::errnoText(errno)));
  }
  if (st.st_size == 0) return false;
  auto db = openHandle(path, SQLITE_OPEN_READONLY);
  if (!db) return db.error();
  auto stmt =
      prepare(db->get(), "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'instances'");
  if (!stmt) return corrupt(path, sqlite3_errmsg(db->get()));
  int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return corrupt(path, sqlite3_errmsg(db->get()));
}

Result<void> InstanceStore::backup(const std::string& db_path, const std::string& dest) {
  auto exists_now = exists(db_path);
  if (!exists_now) return exists_now.error();
  if (!*exists_now) {
    return Error::notFound(fmt::format("There is no instance database at '{}'", db_path));
  }
  // The copy holds sealed secrets and every record: private from its first byte.
  {
    UniqueFd fd(::open(dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) {
      return Error::invalid(
          fmt::format("Cannot create the backup '{}': {}", dest, fs::errnoText(errno)));
    }
  }
  auto fail = [&](Error e) -> Result<void> {
    ::unlink(dest.c_str());
    return e;
  };
  auto source = openHandle(db_path, SQLITE_OPEN_READWRITE);
  if (!source) return fail(source.error());
  auto target = openHandle(dest, SQLITE_OPEN_READWRITE);
  if (!target) return fail(target.error());
  sqlite3_backup* copy = sqlite3_backup_init(target->get(), "main", source->get(), "main");
  if (copy == nullptr) return fail(sqliteError(target->get(), "backup"));
  // One step copies every page under one read transaction of the source: a consistent snapshot
  // while kilnd goes on writing.
  int rc = sqlite3_backup_step(copy, -1);
  sqlite3_backup_finish(copy);
  if (rc != SQLITE_DONE) return fail(sqliteError(target->get(), "backup"));
  // One self-contained file, with nothing left in a write-ahead log beside it.
  for (const char* sql : {"PRAGMA journal_mode=DELETE"}) {
    if (sqlite3_exec(target->get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return fail(sqliteError(target->get(), "backup"));
    }
  }
  auto check = integrityCheck(target->get());
  if (!check) return fail(check.error());
  if (*check != "ok") return fail(corrupt(dest, *check));
  target->reset();
  UniqueFd fd(::open(dest.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return fail(Error::internal(fmt::format("Cannot sync the backup '{}'", dest)));
  }
  return success();
}

Result<std::unique_ptr<InstanceStore>> InstanceStore::open(const std::string& path) {
  auto db = openHandle(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db) return db.error();
  // Before anything writes to it: a damaged database stops kilnd instead of losing records.
  auto check = integrityCheck(db->get());
  if (!check) return corrupt(path, sqlite3_errmsg(db->get()));
  if (*check != "ok") return corrupt(path, *check);
  std::unique_ptr<InstanceStore> store(new InstanceStore(std::move(db).value()));
  for (const char* sql :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON",
        // A deleted record (a sealed disk key, say) is overwritten, not left in free pages.
        "PRAGMA secure_delete=ON",
        "CREATE TABLE IF NOT EXISTS instances ("
        "  uuid TEXT PRIMARY KEY NOT NULL,"
        "  state TEXT NOT NULL,"
        "  image_id TEXT NOT NULL,"
        "  record TEXT NOT NULL)"}) {
    if (auto r = store->exec(sql); !r) return std::move(r).error();
  }
  auto version = prepare(store->db_.get(), "PRAGMA user_version");
  if (!version) return version.error();
  int current =
      sqlite3_step(version->get()) == SQLITE_ROW ? sqlite3_column_int(version->get(), 0) : 0;
  if (current > kSchemaVersion) {
    return Error::internal(fmt::format(
        "Instance database '{}' has schema version {}, newer than this kilnd understands ({})",
        path, current, kSchemaVersion));
  }
  if (auto r = store->exec(fmt::format("PRAGMA user_version={}", kSchemaVersion).c_str()); !r) {
    return std::move(r).error();
  }
  // The records hold sealed secrets; a database made under another umask is mended here.
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string file = path + suffix;
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) ::chmod(file.c_str(), 0600);
  }
  return store;
}

Result<void> InstanceStore::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return Error::internal(fmt::format("Instance database: '{}' failed: {}", sql, msg));
  }
  return success();
}

Result<void> InstanceStore::write(const char* sql, const InstanceRecord& record) {
  std::string doc = toJson(record).dump();
  std::lock_guard lock(mutex_);
  auto stmt = prepare(db_.get(), sql);
  if (!stmt) return stmt.error();
  auto state = std::string(stateName(record.state));
  sqlite3_bind_text(stmt->get(), 1, record.uuid.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt->get(), 2, state.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt->get(), 3, record.image_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt->get(), 4, doc.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_CONSTRAINT) {
    return Error::conflict(fmt::format("Instance '{}' already exists", record.uuid));
  }
  if (rc != SQLITE_DONE) return sqliteError(db_.get(), "write");
  return success();
}

Result<void> InstanceStore::put(const InstanceRecord& record) {
  return write("INSERT OR REPLACE INTO instances (uuid, state, image_id, record) VALUES (?,?,?,?)",
               record);
}

Result<void> InstanceStore::insertNew(const InstanceRecord& record) {
  return write("INSERT INTO instances (uuid, state, image_id, record) VALUES (?,?,?,?)", record);
}

Result<void> InstanceStore::remove(const std::string& uuid) {
  std::lock_guard lock(mutex_);
  auto stmt = prepare(db_.get(), "DELETE FROM instances WHERE uuid = ?");
  if (!stmt) return stmt.error();
  sqlite3_bind_text(stmt->get(), 1, uuid.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(stmt->get()) != SQLITE_DONE) return sqliteError(db_.get(), "delete");
  return success();
}

Result<void> InstanceStore::forgetHistory() {
  std::lock_guard lock(mutex_);
  int rc =
      sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  if (rc != SQLITE_OK) return sqliteError(db_.get(), "checkpoint");
  return success();
}

Result<std::vector<InstanceRecord>> InstanceStore::loadAll() {
  std::lock_guard lock(mutex_);
  auto stmt = prepare(db_.get(), "SELECT record FROM instances ORDER BY uuid");
  if (!stmt) return stmt.error();
  std::vector<InstanceRecord> out;
  int rc;
  while ((rc = sqlite3_step(stmt->get())) == SQLITE_ROW) {
    auto rec = rowToRecord(stmt->get());
    if (!rec) return rec.error();
    out.push_back(std::move(rec).value());
  }
  if (rc != SQLITE_DONE) return sqliteError(db_.get(), "load");
  return out;
}

Result<std::optional<InstanceRecord>> InstanceStore::get(const std::string& uuid) {
  std::lock_guard lock(mutex_);
  auto stmt = prepare(db_.get(), "SELECT record FROM instances WHERE uuid = ?");
  if (!stmt) return stmt.error();
  sqlite3_bind_text(stmt->get(), 1, uuid.c_str(), -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_DONE) return std::optional<InstanceRecord>{};
  if (rc != SQLITE_ROW) return sqliteError(db_.get(), "get");
  auto rec = rowToRecord(stmt->get());
  if (!rec) return rec.error();
  return std::optional<InstanceRecord>(std::move(rec).value());
}

}  // namespace kiln::state
