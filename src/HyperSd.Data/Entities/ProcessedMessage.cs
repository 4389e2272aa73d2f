namespace HyperSd.Data.Entities;

/// <summary>
/// Inbox record for idempotent consumers: inserted in the same transaction as the message's effects, so a
/// redelivery fails on the (consumer, message_key) key instead of applying them twice.
/// </summary>
public class ProcessedMessage
{
    public required string Consumer { get; set; }
    public required string MessageKey { get; set; }
    public DateTimeOffset ProcessedAt { get; set; }
}
