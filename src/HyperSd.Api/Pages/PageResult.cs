using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace HyperSd.Api.Pages;

/// <summary>A page in the common layout (navigation, who is signed in, the style sheet inline), sent with a Content
/// Security Policy that allows no script at all, only this host's images and the one inline style sheet (by its hash).</summary>
public sealed class PageResult(string title, Markup body, int status = StatusCodes.Status200OK) : IResult
{
    const string Css = """
        body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#fafbfc}
        header{display:flex;gap:1.2em;align-items:center;padding:.6em 1.2em;background:#24292f;color:#fff}
        header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;opacity:.85}
        header form{margin:0}header button{font:inherit;background:none;border:1px solid #fff8;color:#fff;border-radius:4px;cursor:pointer}
        main{padding:1em 1.6em;max-width:1400px}h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.15em;margin:1.4em 0 .5em}
        table{border-collapse:collapse;background:#fff;margin:.4em 0}
        th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}
        th{background:#f0f3f6}td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:700;background:#e6f4ea}
        .state-succeeded{color:#1a7f37}.state-failed{color:#cf222e}.state-running{color:#0969da}
        .state-cancelled,.state-pending{color:#6e7781}
        .error{color:#cf222e}.muted{color:#6e7781}progress{width:7em}
        .plots{display:flex;flex-wrap:wrap;gap:1em}svg.plot{background:#fff;border:1px solid #d0d7de}
        svg .grid{stroke:#e5e8eb}svg .axis{stroke:#57606a}svg text{font:11px system-ui,sans-serif;fill:#1b1f24}
        .grids,.gallery{display:flex;flex-wrap:wrap;gap:1.4em}figure{margin:0;background:#fff;border:1px solid #d0d7de;padding:.6em}
        figure .cols{display:flex;justify-content:space-around;font-weight:600}figure .body{display:flex;gap:.6em}
        figure .rows{display:flex;flex-direction:column;justify-content:space-around;max-width:16em;font-size:12px}
        figure img{image-rendering:pixelated}figcaption{margin-top:.4em}figure.image{max-width:140px;font-size:12px}
        form.login{background:#fff;border:1px solid #d0d7de;padding:1.2em;max-width:28em}
        form.login input[type=password]{width:100%;box-sizing:border-box;padding:.4em;margin:.4em 0}
        """;

    /// <summary>The policy: no script, no frames, forms only back to this host, images only from it (and the empty inline icon).</summary>
    static readonly string Policy =
        "default-src 'none'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; " +
                                    $"style-src 'sha256-{Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(Css)))}'";

    public async Task ExecuteAsync(HttpContext context)
    {
        var user = context.User;
        var who = user.Identity?.IsAuthenticated == true && user.Identity.AuthenticationType == PageAuth.CookieScheme
            ? Html.Of($"<span class=\"who\">{user.Identity.Name} ({user.FindFirstValue(ClaimTypes.Role)})</span>" +
                      $"<form method=\"post\" action=\"/logout\"><button type=\"submit\">log out</button></form>")
            : Markup.Empty;
        var nav = user.Identity?.IsAuthenticated == true
            ? Html.Of($"<a href=\"/runs\">Runs</a><a href=\"/schedules\">Schedules</a><a href=\"/hangfire\">Dashboard</a>")
            : Markup.Empty;
        var page = Html.Of(
            $"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">" +
            // an empty icon: the browser asks for /favicon.ico otherwise
            $"<link rel=\"icon\" href=\"data:,\">" +
            $"<title>{title} · HyperSd</title><style>{new Markup(Css)}</style></head>" +
            $"<body><header><a href=\"/runs\">HyperSd</a>{nav}{who}</header><main>{body}</main></body></html>");
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/html; charset=utf-8";
        context.Response.Headers.ContentSecurityPolicy = Policy;
        context.Response.Headers.XContentTypeOptions = "nosniff";
        context.Response.Headers.CacheControl = "no-store";
        context.Response.Headers["Referrer-Policy"] = "same-origin";
        await context.Response.WriteAsync(page.Value, context.RequestAborted);
    }
}
