#pragma once
// The durable list of instances: SQLite in WAL mode with synchronous=FULL, so a record written
// before a side effect survives a crash of kilnd or of the host.

#include <sqlite3.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/state/instance_record.h"
#include "common/result.h"

namespace kiln::state {

struct SqliteClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using SqliteHandle = std::unique_ptr<sqlite3, SqliteClose>;

class InstanceStore {
 public:
  // Opens the database, creating it when there is none. A file that is not a database, or one
  // that fails SQLite's integrity check, is an error that names it: kilnd must stop rather than
  // start with records missing. The files are 0600 (and made so if they were not).
  static Result<std::unique_ptr<InstanceStore>> open(const std::string& path);

  // Whether `path` already holds kiln's database: a file with the instances table. False for a
  // missing or empty file (SQLite would take an empty file for a new database).
  static Result<bool> exists(const std::string& path);

  // A consistent copy of the database at `db_path` (which kilnd may be using: SQLite's online
  // backup API), written to `dest` (mode 0600; an existing file is refused) and checked.
  static Result<void> backup(const std::string& db_path, const std::string& dest);

  // Insert or replace the whole record.
  Result<void> put(const InstanceRecord& record);
  // Insert only when no row with this uuid exists; kConflict otherwise.
  Result<void> insertNew(const InstanceRecord& record);
  Result<void> remove(const std::string& uuid);
  Result<std::vector<InstanceRecord>> loadAll();
  Result<std::optional<InstanceRecord>> get(const std::string& uuid);
  // Copies the write-ahead log into the database and empties it. With secure_delete, this is
  // what makes a value erased from a record (a disk key) gone from kiln.db and kiln.db-wal
  // alike: the log otherwise keeps older versions of the pages until it wraps.
  Result<void> forgetHistory();

 private:
  explicit InstanceStore(SqliteHandle db) : db_(std::move(db)) {}
  Result<void> exec(const char* sql);
  Result<void> write(const char* sql, const InstanceRecord& record);

  std::mutex mutex_;
  SqliteHandle db_;
};

}  // namespace kiln::state
