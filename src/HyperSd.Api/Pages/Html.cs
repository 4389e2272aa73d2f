using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Encodings.Web;

namespace HyperSd.Api.Pages;

/// <summary>Markup that is already HTML: inserted as is. Everything else put into <see cref="Html.Of"/> is encoded, so a
/// run or schedule name can never become markup.</summary>
public readonly record struct Markup(string Value)
{
    public static readonly Markup Empty = new("");
    public override string ToString() => Value;
}

/// <summary>HTML from interpolated strings: literal parts are markup, every hole is HTML-encoded unless it is
/// <see cref="Markup"/> (numbers and times are formatted with the invariant culture first).</summary>
public static class Html
{
    public static Markup Of(Handler html) => new(html.ToString());

    public static Markup Join(IEnumerable<Markup> parts) => new(string.Concat(parts.Select(p => p.Value)));

    public static Markup Join<T>(IEnumerable<T> items, Func<T, Markup> render) => Join(items.Select(render));

    /// <summary>Encodes text for an element's content or a quoted attribute value.</summary>
    public static string Encode(string text) => HtmlEncoder.Default.Encode(text);

    [InterpolatedStringHandler]
    public ref struct Handler(int literalLength, int formattedCount)
    {
        readonly StringBuilder builder = new(literalLength + formattedCount * 16);

        public readonly void AppendLiteral(string literal) => builder.Append(literal);

        public readonly void AppendFormatted(Markup markup) => builder.Append(markup.Value);

        public readonly void AppendFormatted<T>(T value) => AppendFormatted(value, null);

        public readonly void AppendFormatted<T>(T value, string? format)
        {
            if (value is Markup raw)
            {
                // a Markup passed through a generic hole is still raw
                builder.Append(raw.Value);
                return;
            }
            builder.Append(Encode(value switch
            {
                null => "",
                IFormattable f => f.ToString(format, CultureInfo.InvariantCulture),
                _ => value.ToString() ?? "",
            }));
        }

        public override readonly string ToString() => builder.ToString();
    }
}
