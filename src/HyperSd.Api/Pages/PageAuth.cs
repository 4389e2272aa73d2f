using System.Security.Claims;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.Cookies;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Net.Http.Headers;

namespace HyperSd.Api.Pages;

/// <summary>How the pages authenticate: a login form takes an API key and signs a cookie ticket (ASP.NET Core's cookie
/// handler, encrypted and signed by data protection) holding the key's name, role and hash, never the key. The host's
/// default scheme picks per request: a key header, or any <c>/api</c> or <c>/openapi</c> path, goes to the API-key
/// handler (401 problem+json, cookies ignored: the API takes no ambient credentials, so it needs no CSRF defence);
/// everything else (the pages, the dashboard) to the cookie, whose challenge redirects to <c>/login</c>.</summary>
public static class PageAuth
{
    public const string CookieScheme = "PageCookie";
    /// <summary>The host's default scheme: forwards to <see cref="ApiKeyAuthenticationHandler.SchemeName"/> or
    /// <see cref="CookieScheme"/>.</summary>
    public const string Scheme = "KeyOrCookie";
    public const string CookieName = "hypersd_session";
    public const string LoginPath = "/login";
    public const string ReturnUrlParameter = "returnUrl";
    /// <summary>The SHA-256 of the key the ticket was signed in with: each request checks the key ring still holds it.</summary>
    const string KeyHashClaim = "hypersd:key-sha256";

    public static AuthenticationBuilder AddPageCookie(this AuthenticationBuilder auth) => auth
        .AddCookie(CookieScheme, o =>
        {
            o.Cookie.Name = CookieName;
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = Microsoft.AspNetCore.Http.SameSiteMode.Strict;
            // Secure whenever the request is HTTPS; `hypersd serve` listens on plain http://127.0.0.1, where a Secure
            // cookie would not come back from every browser
            o.Cookie.SecurePolicy = CookieSecurePolicy.SameAsRequest;
            o.ExpireTimeSpan = TimeSpan.FromHours(12);
            o.SlidingExpiration = true;
            o.LoginPath = LoginPath;
            o.ReturnUrlParameter = ReturnUrlParameter;
            o.Events.OnValidatePrincipal = ValidateAsync;
            o.Events.OnRedirectToLogin = context =>
            {
                if (WantsPage(context.Request)) context.Response.Redirect(context.RedirectUri);
                else context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                return Task.CompletedTask;
            };
            // no page needs more than a viewer; what is refused is refused plainly, not redirected
            o.Events.OnRedirectToAccessDenied = context =>
            {
                context.Response.StatusCode = StatusCodes.Status403Forbidden;
                return Task.CompletedTask;
            };
        })
        .AddPolicyScheme(Scheme, "an API key, or the pages' cookie",
            o => o.ForwardDefaultSelector = c => UsesKey(c.Request) ? ApiKeyAuthenticationHandler.SchemeName : CookieScheme);

    /// <summary>Requests the API-key handler answers: those that carry a key, and every API path.</summary>
    public static bool UsesKey(HttpRequest request) =>
        request.Headers.ContainsKey(HeaderNames.Authorization) || request.Headers.ContainsKey(ApiKeyAuthenticationHandler.HeaderName)
        || request.Path.StartsWithSegments("/api") || request.Path.StartsWithSegments("/openapi");

    /// <summary>An anonymous request is sent to the login form when it is for a page, or for the dashboard from a browser
    /// (its own script's polls, and other clients, get a plain 401).</summary>
    static bool WantsPage(HttpRequest request) =>
        !request.Path.StartsWithSegments("/hangfire")
        || request.GetTypedHeaders().Accept.Any(a => a.MediaType.Equals("text/html", StringComparison.OrdinalIgnoreCase));

    /// <summary>The ticket for a key the ring knows, or null.</summary>
    public static ClaimsPrincipal? SignInPrincipal(ApiKeyRing ring, string key)
    {
        if (ring.Find(key) is not { } entry) return null;
        return new ClaimsPrincipal(new ClaimsIdentity(
        [
            new Claim(ClaimTypes.Name, entry.Name), new Claim(ClaimTypes.Role, entry.Role),
            new Claim(KeyHashClaim, Convert.ToHexStringLower(entry.Hash)),
        ], CookieScheme));
    }

    /// <summary>A ticket stays good only while its key does (with the same role): a key dropped from the configuration
    /// signs its sessions out at the next start.</summary>
    static async Task ValidateAsync(CookieValidatePrincipalContext context)
    {
        var ring = context.HttpContext.RequestServices.GetRequiredService<ApiKeyRing>();
        var hash = context.Principal?.FindFirstValue(KeyHashClaim);
        var role = context.Principal?.FindFirstValue(ClaimTypes.Role);
        if (hash is { Length: 64 } && hash.All(Uri.IsHexDigit) && ring.FindHash(Convert.FromHexString(hash)) is { } entry &&
            entry.Role == role)
            return;
        context.RejectPrincipal();
        await context.HttpContext.SignOutAsync(CookieScheme);
    }

    /// <summary>A form post, or any other unsafe request the cookie could authenticate, must come from this host's own
    /// pages (its Origin, or failing that its Referer): with the SameSite=Strict cookie, the defence against cross-site
    /// request forgery, the login form's included (no one can sign a victim in with the attacker's key).</summary>
    public static IApplicationBuilder UseSameOriginForms(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        var request = context.Request;
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method)
            || UsesKey(request) || SameOrigin(request))
        {
            await next(context);
            return;
        }
        context.Response.StatusCode = StatusCodes.Status403Forbidden;
        await context.Response.WriteAsync("a form may only be posted from this host's own pages (Origin or Referer)");
    });

    /// <summary>The request's Origin (or Referer) names this host. The scheme is not compared: behind a TLS proxy the
    /// host sees http while the browser says https.</summary>
    static bool SameOrigin(HttpRequest request)
    {
        var source = request.Headers.Origin.ToString() is { Length: > 0 } origin ? origin : request.Headers.Referer.ToString();
        return Uri.TryCreate(source, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            && string.Equals(uri.Authority, request.Host.Value, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>A return address that stays on this host (a path, not "//elsewhere" nor "/\elsewhere"); else the runs list.</summary>
    public static string LocalReturnUrl(string? url) =>
        url is { Length: > 0 } && url[0] == '/' && (url.Length == 1 || (url[1] != '/' && url[1] != '\\')) && !url.Contains('\n')
            ? url : "/runs";
}
