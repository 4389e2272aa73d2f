using HyperSd.Recipes;
using HyperSd.Services.Runs;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;

namespace HyperSd.Api;

/// <summary>Query values read at the boundary.</summary>
public static class QueryValues
{
    /// <summary>An enum member by its name in any case (state=cancelled); null when absent; anything else is refused naming
    /// <paramref name="field"/> and the names it takes.</summary>
    public static T? Enum<T>(string? value, string field) where T : struct, System.Enum =>
        value is null ? null
        : System.Enum.TryParse<T>(value, ignoreCase: true, out var parsed) && System.Enum.IsDefined(parsed) ? parsed
        : throw new InvalidFieldException(field, $"expected one of " +
            $"{string.Join(", ", System.Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}, got '{value}'");
}

/// <summary>A request body larger than the host accepts (413).</summary>
public sealed class BodyTooLargeException(string field, long limit)
    : InvalidFieldException(field, $"larger than the {limit:N0} bytes this host accepts");

/// <summary>Bad input as problem+json (RFC 9457) whose <c>errors</c> name the field at fault: a recipe's problems by their
/// field, a query's by its parameter; an unknown id is a 404, an oversized body a 413.</summary>
public sealed class ApiExceptionHandler(IProblemDetailsService problems) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken cancellationToken)
    {
        var problem = exception switch
        {
            RecipeValidationException e => Problem(StatusCodes.Status400BadRequest, "the recipe is not valid",
                $"{e.Problems.Count} problem(s) in the recipe",
                e.Problems.GroupBy(p => p.Field).ToDictionary(g => g.Key, g => g.Select(p => p.Message).ToArray())),
            UnknownIdException e => Field(StatusCodes.Status404NotFound, "not found", e),
            BodyTooLargeException e => Field(StatusCodes.Status413PayloadTooLarge, "request body too large", e),
            InvalidFieldException e => Field(StatusCodes.Status400BadRequest, $"invalid {e.ParamName}", e),
            BadHttpRequestException e => Problem(e.StatusCode, "bad request", e.Message, null),
            _ => null,
        };
        if (problem is null) return false;
        context.Response.StatusCode = problem.Status!.Value;
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = context, ProblemDetails = problem, Exception = exception,
        });
    }

    static ValidationProblemDetails Field(int status, string title, InvalidFieldException e) =>
        Problem(status, title, e.Message, new Dictionary<string, string[]> { [e.ParamName!] = [e.Message] });

    static ValidationProblemDetails Problem(int status, string title, string detail, IDictionary<string, string[]>? errors) =>
        new(errors ?? new Dictionary<string, string[]>()) { Status = status, Title = title, Detail = detail };
}
