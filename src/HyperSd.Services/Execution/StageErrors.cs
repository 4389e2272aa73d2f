using HyperSd.Diffusion.IO;
using HyperSd.Recipes;
using Microsoft.EntityFrameworkCore;

namespace HyperSd.Services.Execution;

/// <summary>Which failures are worth retrying.</summary>
public static class StageErrors
{
    /// <summary>Permanent: wrong settings or data, which fail the same way again (bad arguments, unreadable or missing
    /// inputs, unsupported models). Transient: I/O, timeouts, the store — and anything unknown, within the retry budget.</summary>
    public static bool IsTransient(Exception e) => e switch
    {
        // EF wraps a store outage in InvalidOperationException ("likely due to a transient failure")
        _ when StoreRetry.IsTransient(e) => true,
        LeaseLostException => false,
        RecipeValidationException or ArgumentException or InvalidDataException or WeightLoadException or NotSupportedException
            or FormatException or FileNotFoundException or DirectoryNotFoundException or KeyNotFoundException
            or InvalidOperationException => false,
        DbUpdateException or IOException or TimeoutException or UnauthorizedAccessException => true,
        AggregateException { InnerExceptions.Count: 1 } a => IsTransient(a.InnerExceptions[0]),
        _ => true,
    };
}
