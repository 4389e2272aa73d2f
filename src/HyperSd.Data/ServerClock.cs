using Microsoft.EntityFrameworkCore;

namespace HyperSd.Data;

/// <summary>
/// The database server's clock, the one clock of leases: workers and orchestrators on different machines disagree
/// about the time, so lease times are written with the server's "now" inside the UPDATE and compared with it.
/// SQLite stores timestamps as UTC ticks (see <see cref="MetadataDbContext"/>), PostgreSQL as timestamptz.
/// </summary>
public static class ServerClock
{
    // julianday('now') is days since noon, 24 November 4714 BC; 0001-01-01 (tick 0) is julian day 1721425.5
    const string SqliteNowTicks = "CAST((julianday('now') - 1721425.5) * 864000000000 AS INTEGER)";

    /// <summary>SQL for the server's current time in a timestamp column.</summary>
    public static string NowSql(this MetadataDbContext db) => db.Database.IsSqlite() ? SqliteNowTicks : "now()";

    /// <summary>SQL for the server's current time plus <paramref name="span"/> in a timestamp column.</summary>
    public static string NowPlusSql(this MetadataDbContext db, TimeSpan span) => db.Database.IsSqlite()
        ? $"({SqliteNowTicks} + {span.Ticks})"
        : $"(now() + interval '{span.TotalMilliseconds.ToString(System.Globalization.CultureInfo.InvariantCulture)} milliseconds')";

    /// <summary>The server's current time.</summary>
    public static async Task<DateTimeOffset> NowAsync(this MetadataDbContext db, CancellationToken ct = default)
    {
        if (db.Database.IsSqlite())
            return new DateTimeOffset(await db.Database.SqlQueryRaw<long>($"SELECT {SqliteNowTicks} AS \"Value\"").SingleAsync(ct),
                TimeSpan.Zero);
        return await db.Database.SqlQueryRaw<DateTimeOffset>("SELECT now() AS \"Value\"").SingleAsync(ct);
    }
}
