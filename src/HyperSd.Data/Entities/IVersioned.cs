namespace HyperSd.Data.Entities;

/// <summary>
/// An entity with an optimistic concurrency token. <see cref="MetadataDbContext"/> bumps <see cref="Version"/> on
/// every update, so a save based on a stale read fails with DbUpdateConcurrencyException on both providers.
/// </summary>
public interface IVersioned
{
    int Version { get; set; }
}
