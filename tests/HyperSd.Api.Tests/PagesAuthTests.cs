using System.Net;
using System.Net.Http.Headers;
using HyperSd.Api.Pages;
using HyperSd.Services.Schedules;
using HyperSd.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Api.Tests;

/// <summary>The pages' login: anonymous pages go to the form, a wrong key gets the form again, a good key a session cookie
/// (HttpOnly, SameSite=Strict, the key not in it) that opens the pages and the dashboard but not the API, which still
/// answers 401; posts from another origin are refused.</summary>
public sealed class PagesAuthTests
{
    const string Origin = "http://localhost"; // the test server's own

    static HttpRequestMessage Login(string key, string? returnUrl = null, string? origin = Origin)
    {
        var fields = new Dictionary<string, string> { ["key"] = key };
        if (returnUrl is not null) fields[PageAuth.ReturnUrlParameter] = returnUrl;
        var request = new HttpRequestMessage(HttpMethod.Post, "/login") { Content = new FormUrlEncodedContent(fields) };
        if (origin is not null) request.Headers.Add("Origin", origin);
        return request;
    }

    static string? SessionCookie(HttpResponseMessage response) =>
        response.Headers.TryGetValues("Set-Cookie", out var values)
            ? values.FirstOrDefault(v => v.StartsWith(PageAuth.CookieName + "=", StringComparison.Ordinal))
            : null;

    /// <summary>Where a redirect points, as a path and query (the cookie handler sends the login form's absolute URL).</summary>
    static string? Target(HttpResponseMessage response) =>
        response.Headers.Location is { } location ? new Uri(new Uri(Origin), location).PathAndQuery : null;

    static HttpRequestMessage WithCookie(HttpMethod method, string path, string cookie)
    {
        var request = new HttpRequestMessage(method, path);
        request.Headers.Add("Cookie", cookie.Split(';')[0]);
        return request;
    }

    [Fact]
    public async Task Anonymous_pages_redirect_to_the_login_form_while_the_API_still_answers_401()
    {
        await using var host = await ApiTestHost.StartAsync();
        var client = host.Client(null);
        foreach (var path in new[] { "/", "/runs", $"/runs/{Guid.NewGuid()}", "/compare?runs=a", "/schedules",
                     $"/runs/{Guid.NewGuid()}/artifacts/grid.png" })
        {
            var response = await client.GetAsync(path);
            Assert.True(response.StatusCode == HttpStatusCode.Redirect, $"{path}: {response.StatusCode}");
            Assert.Equal($"/login?returnUrl={Uri.EscapeDataString(path)}", Target(response));
        }
        var form = await client.GetAsync("/login?returnUrl=%2Fschedules");
        Assert.Equal(HttpStatusCode.OK, form.StatusCode);
        var html = await form.Content.ReadAsStringAsync();
        Assert.Contains("<form class=\"login\" method=\"post\" action=\"/login\">", html);
        Assert.Contains("name=\"returnUrl\" value=\"/schedules\"", html);

        var api = await client.GetAsync("/api/runs");
        Assert.Equal(HttpStatusCode.Unauthorized, api.StatusCode);
        Assert.Equal("application/problem+json", api.Content.Headers.ContentType?.MediaType);
        // the dashboard: a browser is sent to the form, other clients get 401
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/hangfire")).StatusCode);
        using var browser = new HttpRequestMessage(HttpMethod.Get, "/hangfire");
        browser.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/html"));
        Assert.Equal("/login?returnUrl=%2Fhangfire", Target(await client.SendAsync(browser)));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public async Task A_wrong_key_gets_the_form_again_with_an_error_and_no_cookie()
    {
        await using var host = await ApiTestHost.StartAsync();
        var response = await host.Client(null).SendAsync(Login("not-a-key-0123456789abcdefghij", "/schedules"));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var html = await response.Content.ReadAsStringAsync();
        Assert.Contains("That key is not one this host knows.", html);
        Assert.Contains("value=\"/schedules\"", html);
        Assert.Null(SessionCookie(response));
        Assert.Null(SessionCookie(await host.Client(null).SendAsync(Login(""))));
    }

    [Fact]
    public async Task A_good_key_signs_a_strict_HttpOnly_cookie_that_opens_the_pages_and_the_dashboard_but_not_the_API()
    {
        await using var host = await ApiTestHost.StartAsync();
        var client = host.Client(null);
        var login = await client.SendAsync(Login(ApiTestHost.ViewerKey, "/schedules"));
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);
        Assert.Equal("/schedules", Target(login));
        var cookie = SessionCookie(login) ?? throw new InvalidOperationException("no session cookie");
        Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("path=/", cookie, StringComparison.OrdinalIgnoreCase);
        // a ticket, not the key (nor its hash in the clear)
        Assert.DoesNotContain(ApiTestHost.ViewerKey, cookie);
        Assert.DoesNotContain(ApiOptions.Hash(ApiTestHost.ViewerKey), cookie, StringComparison.OrdinalIgnoreCase);

        foreach (var path in new[] { "/runs", "/schedules", "/runs?state=succeeded" })
        {
            var page = await client.SendAsync(WithCookie(HttpMethod.Get, path, cookie));
            Assert.True(page.StatusCode == HttpStatusCode.OK, $"{path}: {page.StatusCode}");
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
            Assert.Contains("default-src 'none'", page.Headers.GetValues("Content-Security-Policy").Single());
            Assert.Contains("viewer (viewer)", await page.Content.ReadAsStringAsync());
        }
        var dashboard = await client.SendAsync(WithCookie(HttpMethod.Get, "/hangfire/recurring", cookie));
        Assert.Equal(HttpStatusCode.OK, dashboard.StatusCode);
        // read-only for a viewer's session too; and a post the cookie would carry from another site is refused outright
        var trigger = WithCookie(HttpMethod.Post, "/hangfire/recurring/trigger", cookie);
        trigger.Headers.Add("Origin", Origin);
        trigger.Content = new FormUrlEncodedContent([KeyValuePair.Create("jobs[]", "schedule-x")]);
        var triggered = await client.SendAsync(trigger);
        Assert.False(triggered.IsSuccessStatusCode, $"a viewer's session triggered a job: {triggered.StatusCode}");
        var forged = WithCookie(HttpMethod.Post, "/hangfire/recurring/trigger", cookie);
        forged.Headers.Add("Origin", "http://evil.example");
        Assert.Equal(HttpStatusCode.Forbidden, (await client.SendAsync(forged)).StatusCode);
        // the API takes keys only: the cookie does not open it
        var api = await client.SendAsync(WithCookie(HttpMethod.Get, "/api/runs", cookie));
        Assert.Equal(HttpStatusCode.Unauthorized, api.StatusCode);
        var unknown = await client.SendAsync(WithCookie(HttpMethod.Get, $"/runs/{Guid.NewGuid()}", cookie));
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);

        // a return address elsewhere is not followed
        var offsite = await client.SendAsync(Login(ApiTestHost.ViewerKey, "//evil.example/"));
        Assert.Equal("/runs", Target(offsite));

        var logout = WithCookie(HttpMethod.Post, "/logout", cookie);
        logout.Headers.Add("Origin", Origin);
        var loggedOut = await client.SendAsync(logout);
        Assert.Equal("/login", Target(loggedOut));
        Assert.Contains("expires=Thu, 01 Jan 1970", SessionCookie(loggedOut) ?? "", StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Form_posts_from_another_origin_or_from_nowhere_are_refused()
    {
        await using var host = await ApiTestHost.StartAsync();
        var client = host.Client(null);
        var crossSite = await client.SendAsync(Login(ApiTestHost.AdminKey, origin: "http://evil.example"));
        Assert.Equal(HttpStatusCode.Forbidden, crossSite.StatusCode);
        Assert.Null(SessionCookie(crossSite));
        var unsourced = await client.SendAsync(Login(ApiTestHost.AdminKey, origin: null));
        Assert.Equal(HttpStatusCode.Forbidden, unsourced.StatusCode);
        // the Referer stands in for a missing Origin
        var referred = Login(ApiTestHost.AdminKey, origin: null);
        referred.Headers.Referrer = new Uri("http://localhost/login");
        Assert.Equal(HttpStatusCode.Redirect, (await client.SendAsync(referred)).StatusCode);
        // API calls carry their key, not a cookie: no origin needed
        var apiPost = await host.Client(ApiTestHost.OperatorKey).PostAsync($"/api/runs/{Guid.NewGuid()}/cancel", null);
        Assert.Equal(HttpStatusCode.NotFound, apiPost.StatusCode);
    }

    [Fact]
    public async Task A_session_ends_when_its_key_leaves_the_configuration()
    {
        await ApiTestHost.InStoreFolderAsync("hypersd-pages-keys-", async root =>
        {
            string cookie;
            await using (var host = await ApiTestHost.StartAsync(root: root))
                cookie = SessionCookie(await host.Client(null).SendAsync(Login(ApiTestHost.ViewerKey)))
                         ?? throw new InvalidOperationException("no session cookie");
            // the same host folder (so the same data protection application) with only the admin's key
            await using (var host = await ApiTestHost.StartAsync(new ApiOptions { Keys = [ApiTestHost.DefaultKeys().Keys[0]] }, root: root))
                Assert.Equal("/login?returnUrl=%2Fruns",
                    Target(await host.Client(null).SendAsync(WithCookie(HttpMethod.Get, "/runs", cookie))));
            // with the viewer's key back the same ticket is good: it was refused for its key, not for being unreadable
            await using (var host = await ApiTestHost.StartAsync(root: root))
                Assert.Equal(HttpStatusCode.OK,
                    (await host.Client(null).SendAsync(WithCookie(HttpMethod.Get, "/runs", cookie))).StatusCode);
        });
    }

    [Fact]
    public async Task A_schedule_name_with_markup_is_shown_as_text()
    {
        await using var host = await ApiTestHost.StartAsync();
        var schedules = host.App.Services.GetRequiredService<ScheduleService>();
        await schedules.SaveAsync(null,
            new ScheduleRequest("<script>alert(1)</script>", null, TinyToy.Recipe(), "0 2 * * *", "Europe/Berlin"));
        var html = await host.Client(ApiTestHost.ViewerKey).GetStringAsync("/schedules");
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html);
        Assert.DoesNotContain("<script>", html);
        Assert.Contains("Europe/Berlin", html);
        Assert.Contains("none yet", html);
    }
}
