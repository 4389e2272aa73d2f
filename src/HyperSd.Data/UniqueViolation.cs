using Microsoft.Data.Sqlite;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace HyperSd.Data;

/// <summary>
/// A unique index refused an insert: the loser of two concurrent submissions with the same name gets this after
/// its "name in use?" check passed, so callers turn it into the same error the check gives.
/// </summary>
public static class UniqueViolation
{
    // SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY
    const int SqliteUnique = 2067, SqlitePrimaryKey = 1555;

    public static bool Is(DbUpdateException e) => e.InnerException switch
    {
        PostgresException p => p.SqlState == PostgresErrorCodes.UniqueViolation,
        SqliteException s => s.SqliteExtendedErrorCode is SqliteUnique or SqlitePrimaryKey,
        _ => false,
    };
}
