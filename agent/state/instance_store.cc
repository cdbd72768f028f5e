#include "agent/state/instance_store.h"

#include <fmt/format.h>

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

}  // namespace

Result<std::unique_ptr<InstanceStore>> InstanceStore::open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteHandle db(raw);
  if (rc != SQLITE_OK) {
    return Error::internal(fmt::format("Cannot open instance database '{}': {}", path,
                                       raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  std::unique_ptr<InstanceStore> store(new InstanceStore(std::move(db)));
  sqlite3_busy_timeout(store->db_.get(), 5000);
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
