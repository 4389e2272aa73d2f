using System.Collections.Immutable;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text.Encodings.Web;
using HyperSd.Data;
using HyperSd.Data.Entities;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Http;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace HyperSd.Api;

/// <summary>The keys this host accepts, as hashes only: the configured ones and those the store keeps.</summary>
public sealed class ApiKeyRing
{
    public sealed record Entry(string Name, string Role, byte[] Hash);

    ImmutableArray<Entry> entries = [];

    public int Count => entries.Length;

    public void Add(string name, string role, string sha256Hex) =>
        ImmutableInterlocked.Update(ref entries, e => e.Add(new Entry(name, role, Convert.FromHexString(sha256Hex))));

    /// <summary>The entry whose hash is the key's, comparing every entry in constant time (no early exit reveals which
    /// or how much of a hash matched).</summary>
    public Entry? Find(string key)
    {
        var hash = Convert.FromHexString(ApiOptions.Hash(key));
        Entry? found = null;
        foreach (var entry in entries)
            if (CryptographicOperations.FixedTimeEquals(entry.Hash, hash)) found = entry;
        return found;
    }
}

/// <summary>Loads the stored keys at start (after the store's migration) and, when neither configuration nor store has
/// any, makes an admin key, stores its hash and keeps the key in <see cref="GeneratedAdminKey"/> for the host to print once.</summary>
public sealed class ApiKeyBootstrap(ApiKeyRing ring, ApiOptions options, IDbContextFactory<MetadataDbContext> dbs,
    ILogger<ApiKeyBootstrap> logger) : IHostedService
{
    /// <summary>The admin key made at this start; null when keys existed.</summary>
    public string? GeneratedAdminKey { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await using var db = await dbs.CreateDbContextAsync(cancellationToken);
        foreach (var key in await db.ApiKeys.AsNoTracking().ToListAsync(cancellationToken))
            ring.Add(key.Name, key.Role, key.Sha256);
        if (ring.Count > 0 || !options.BootstrapAdminKey) return;
        // 32 random bytes: the hash alone guards it, so it must not be guessable.
        var generated = "hsd_" + Base64UrlEncoder(RandomNumberGenerator.GetBytes(32));
        var stored = new ApiKey
        {
            Id = Guid.NewGuid(), Name = "admin (made at first start)", Role = ApiRoles.Admin, Sha256 = ApiOptions.Hash(generated),
            CreatedAt = DateTimeOffset.UtcNow,
        };
        db.ApiKeys.Add(stored);
        await db.SaveChangesAsync(cancellationToken);
        ring.Add(stored.Name, stored.Role, stored.Sha256);
        GeneratedAdminKey = generated;
        logger.LogWarning("no API key was configured: made an admin key and stored its hash (the host prints the key once)");
    }

    static string Base64UrlEncoder(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

/// <summary>Authenticates <c>Authorization: Bearer KEY</c> or <c>X-Api-Key: KEY</c> against the key ring; answers 401 and
/// 403 as problem+json.</summary>
public sealed class ApiKeyAuthenticationHandler(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger,
    UrlEncoder encoder, ApiKeyRing ring, IProblemDetailsService problems)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "ApiKey";
    public const string HeaderName = "X-Api-Key";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string? key = null;
        if (Request.Headers.Authorization.ToString() is { } auth && auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            key = auth["Bearer ".Length..].Trim();
        else if (Request.Headers[HeaderName].ToString() is { Length: > 0 } header)
            key = header.Trim();
        if (string.IsNullOrEmpty(key)) return Task.FromResult(AuthenticateResult.NoResult());
        if (ring.Find(key) is not { } entry) return Task.FromResult(AuthenticateResult.Fail("unknown API key"));
        var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, entry.Name), new Claim(ClaimTypes.Role, entry.Role)], SchemeName);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        Response.StatusCode = StatusCodes.Status401Unauthorized;
        Response.Headers.WWWAuthenticate = "Bearer";
        var result = await HandleAuthenticateOnceSafeAsync();
        await WriteAsync(StatusCodes.Status401Unauthorized, "authentication required",
            result.Failure is null
                ? $"send an API key as 'Authorization: Bearer KEY' or '{HeaderName}: KEY'"
                : "the API key is not one this host knows");
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties) =>
        WriteAsync(StatusCodes.Status403Forbidden, "forbidden",
            $"this needs an {ApiRoles.Operator} or {ApiRoles.Admin} key; yours is a {Context.User.FindFirstValue(ClaimTypes.Role)} key");

    Task WriteAsync(int status, string title, string detail)
    {
        Response.StatusCode = status;
        return problems.WriteAsync(new ProblemDetailsContext
        {
            HttpContext = Context,
            ProblemDetails = { Status = status, Title = title, Detail = detail },
        }).AsTask();
    }
}
