using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Configuration;

namespace HyperSd.Api;

/// <summary>The roles an API key can have: viewers read, operators also submit, cancel and resume, admins do all.</summary>
public static class ApiRoles
{
    public const string Admin = "admin";
    public const string Operator = "operator";
    public const string Viewer = "viewer";
    public static readonly IReadOnlyList<string> All = [Admin, Operator, Viewer];
}

/// <summary>One configured key: its name (shown in logs), role, and either the key or its SHA-256 (hex) — the host keeps
/// only the hash either way.</summary>
public sealed class ApiKeyOptions
{
    public string Name { get; set; } = "";
    public string Role { get; set; } = ApiRoles.Viewer;
    public string? Key { get; set; }
    public string? Sha256 { get; set; }
}

/// <summary>The API host's settings (configuration section "Api").</summary>
public sealed class ApiOptions
{
    /// <summary>Shortest key accepted from configuration: a key is only as strong as its entropy.</summary>
    public const int MinKeyLength = 24;

    public List<ApiKeyOptions> Keys { get; set; } = [];
    /// <summary>Largest recipe body accepted by POST /api/runs.</summary>
    public long MaxRecipeBytes { get; set; } = 1 << 20;
    /// <summary>Print nothing and make no key when none is configured (a deployment that must be configured).</summary>
    public bool BootstrapAdminKey { get; set; } = true;

    public static ApiOptions FromConfiguration(IConfiguration section) => (section.Get<ApiOptions>() ?? new ApiOptions()).Validate();

    /// <summary>Checks every key; throws naming the key at fault.</summary>
    public ApiOptions Validate()
    {
        for (var i = 0; i < Keys.Count; i++)
        {
            var k = Keys[i];
            var name = k.Name is { Length: > 0 } n ? $"'{n}'" : $"#{i}";
            if (!ApiRoles.All.Contains(k.Role))
                throw new ArgumentException($"API key {name}: unknown role '{k.Role}'; expected {string.Join(", ", ApiRoles.All)}");
            if ((k.Key is null) == (k.Sha256 is null))
                throw new ArgumentException($"API key {name}: give exactly one of Key and Sha256");
            if (k.Key is { Length: < MinKeyLength })
                throw new ArgumentException($"API key {name}: a key needs at least {MinKeyLength} characters");
            if (k.Sha256 is { } hash && (hash.Length != 64 || !hash.All(Uri.IsHexDigit)))
                throw new ArgumentException($"API key {name}: Sha256 must be 64 hex digits");
        }
        if (MaxRecipeBytes < 1) throw new ArgumentException($"Api:MaxRecipeBytes must be positive, got {MaxRecipeBytes}");
        return this;
    }

    /// <summary>The lower-case hex SHA-256 of a key's UTF-8 bytes, as the store keeps it.</summary>
    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));
}
