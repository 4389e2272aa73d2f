using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Toy;

public enum ToyShape { Circle, Square, Triangle }
public enum ToyColor { Red, Green, Blue, Yellow }
public enum ToyPosition { TopLeft, TopRight, BottomLeft, BottomRight, Center }
public enum ToySize { Small, Large }

/// <summary>One object drawn in a toy image.</summary>
public sealed record ToyObject(ToyShape Shape, ToyColor Color, ToyPosition Position, ToySize Size)
{
    /// <summary>"a large red circle at the top left".</summary>
    [JsonIgnore]
    public string Phrase => $"a {ToyShapes.Word(Size)} {ToyShapes.Word(Color)} {ToyShapes.Word(Shape)} {ToyShapes.Word(Position)}";
}

/// <summary>An object a prompt asks for; a prompt may leave the size open ("a red circle at the top left").</summary>
public sealed record ToyRequest(ToyShape Shape, ToyColor Color, ToyPosition Position, ToySize? Size)
{
    public bool IsMetBy(ToyObject seen, bool matchSize) =>
        seen.Shape == Shape && seen.Color == Color && seen.Position == Position && (!matchSize || Size is null || seen.Size == Size);
}

/// <summary>The labels of one toy image: its objects, each in its own position cell. Serialises to the JSON that
/// <see cref="Data.LatentDataset.Labels"/> holds.</summary>
public sealed record ToyScene
{
    public IReadOnlyList<ToyObject> Objects { get; }

    public ToyScene(IReadOnlyList<ToyObject> objects)
    {
        if (objects.Select(o => o.Position).Distinct().Count() != objects.Count)
            throw new ArgumentException($"two objects share a position cell: {string.Join(", ", objects.Select(o => o.Position))}");
        Objects = objects;
    }

    public string Caption => string.Join(" and ", Objects.Select(o => o.Phrase));

    public string ToJson() => JsonSerializer.Serialize(new Labels(Objects), JsonOptions);

    public static ToyScene FromJson(string json)
    {
        Labels? labels;
        try { labels = JsonSerializer.Deserialize<Labels>(json, JsonOptions); }
        catch (JsonException e) { throw new InvalidDataException($"invalid toy labels '{json}': {e.Message}", e); }
        if (labels?.Objects is null || labels.Objects.Any(o => o is null))
            throw new InvalidDataException(
                $"invalid toy labels '{json}': expected {{\"objects\": [{{\"shape\", \"color\", \"position\", \"size\"}}, ...]}}");
        try { return new ToyScene(labels.Objects); }
        catch (ArgumentException e) { throw new InvalidDataException($"invalid toy labels '{json}': {e.Message}", e); }
    }

    /// <summary>Same objects, in any order (the order only changes the caption, not the image).</summary>
    public bool Equals(ToyScene? other) => other is not null && other.Objects.Count == Objects.Count && Objects.All(other.Objects.Contains);
    public override int GetHashCode() => Objects.Aggregate(0, (hash, o) => hash ^ o.GetHashCode());
    public override string ToString() => Caption;

    sealed record Labels(IReadOnlyList<ToyObject> Objects);

    static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false) },
    };
}

/// <summary>
/// The toy world's data: 32×32 RGB images of one or two coloured shapes on a black background, each in one of five
/// position cells (four corners and the center), with captions built from the attributes. Deterministic: the same seed
/// gives the same scenes and the same pixels. Shapes are anti-aliased by 4×4 supersampling.
/// </summary>
public static class ToyShapes
{
    public const int Resolution = 32;
    public static readonly int Positions = Enum.GetValues<ToyPosition>().Length;

    static readonly string[] ShapeWords = ["circle", "square", "triangle"];
    static readonly string[] ColorWords = ["red", "green", "blue", "yellow"];
    static readonly string[] PositionPhrases =
        ["at the top left", "at the top right", "at the bottom left", "at the bottom right", "in the center"];
    static readonly string[] SizeWords = ["small", "large"];

    static readonly float[][] Rgb = [[0.95f, 0.1f, 0.1f], [0.1f, 0.85f, 0.15f], [0.15f, 0.3f, 1f], [0.95f, 0.9f, 0.1f]];
    // Cells 10 px wide that meet only diagonally (a corner cell and the center), so a large shape can fill its cell.
    // Sizes are whole pixels so that squares are crisp and tell apart from circles even when small.
    static readonly (float X, float Y)[] Centres = [(6, 6), (26, 6), (6, 26), (26, 26), (16, 16)];
    static readonly float[] HalfSizes = [3f, 5f];
    const int Supersampling = 4;

    public static string Word(ToyShape shape) => ShapeWords[(int)shape];
    public static string Word(ToyColor color) => ColorWords[(int)color];
    public static string Word(ToyPosition position) => PositionPhrases[(int)position];
    public static string Word(ToySize size) => SizeWords[(int)size];

    /// <summary>Every word a caption can contain.</summary>
    public static IReadOnlyList<string> CaptionWords { get; } =
        new[] { "a", "and" }.Concat(SizeWords).Concat(ColorWords).Concat(ShapeWords)
            .Concat(PositionPhrases.SelectMany(p => p.Split(' '))).Distinct().ToArray();

    /// <summary>A random scene of one or two objects (or <paramref name="objectCount"/>) in distinct cells: from the whole
    /// caption space, or only from <paramref name="split"/> (<see cref="ToyCaptions"/>; the object count is drawn first, then
    /// objects are redrawn until the scene is in the split).</summary>
    public static ToyScene RandomScene(Random random, int? objectCount = null, ToyCaptionSplit? split = null)
    {
        int count = objectCount ?? random.Next(1, 3);
        if (count < 1 || count > Positions)
            throw new ArgumentOutOfRangeException(nameof(objectCount), $"expected 1..{Positions} objects, got {count}");
        if (split is not null && count > 2)
            throw new ArgumentOutOfRangeException(nameof(objectCount), $"the caption split covers 1 or 2 objects, got {count}");
        while (true)
        {
            var cells = Enumerable.Range(0, Positions).ToArray();
            random.Shuffle(cells);
            var scene = new ToyScene(cells.Take(count).Select(cell => new ToyObject(
                (ToyShape)random.Next(ShapeWords.Length), (ToyColor)random.Next(ColorWords.Length),
                (ToyPosition)cell, (ToySize)random.Next(SizeWords.Length))).ToArray());
            if (split is null || ToyCaptions.SplitOf(scene) == split) return scene;
        }
    }

    /// <summary>Seeded random scenes: from the whole caption space (the recognizer's training, real reference images), or
    /// only from <paramref name="split"/>. Everything a generative model trains on is drawn from the train split.</summary>
    public static IReadOnlyList<ToyScene> RandomScenes(int count, int seed, ToyCaptionSplit? split = null)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => RandomScene(random, split: split)).ToArray();
    }

    /// <summary><paramref name="count"/> random scenes and their images (float32 [count, 3, 32, 32] in [0, 1]).</summary>
    public static (Tensor Images, IReadOnlyList<ToyScene> Scenes) Generate(int count, int seed, ToyCaptionSplit? split = null)
    {
        var scenes = RandomScenes(count, seed, split);
        return (Render(scenes), scenes);
    }

    /// <summary>Draws the scenes: float32 [N, 3, 32, 32] in [0, 1] on the CPU.</summary>
    public static Tensor Render(IReadOnlyList<ToyScene> scenes)
    {
        const int plane = Resolution * Resolution;
        var pixels = new float[scenes.Count * 3 * plane]; // black background
        for (int n = 0; n < scenes.Count; n++)
            foreach (var o in scenes[n].Objects)
            {
                var (cx, cy) = Centres[(int)o.Position];
                float h = HalfSizes[(int)o.Size];
                var rgb = Rgb[(int)o.Color];
                for (int y = (int)(cy - h); y < (int)Math.Ceiling(cy + h); y++)
                    for (int x = (int)(cx - h); x < (int)Math.Ceiling(cx + h); x++)
                    {
                        float coverage = Coverage(o.Shape, x - cx, y - cy, h);
                        if (coverage == 0) continue;
                        for (int c = 0; c < 3; c++) pixels[(n * 3 + c) * plane + y * Resolution + x] = rgb[c] * coverage;
                    }
            }
        return tensor(pixels, [scenes.Count, 3, Resolution, Resolution]);
    }

    /// <summary>Share of the pixel whose top-left corner is at (x, y) relative to the shape centre that the shape covers.</summary>
    static float Coverage(ToyShape shape, float x, float y, float h)
    {
        int inside = 0;
        for (int i = 0; i < Supersampling; i++)
            for (int j = 0; j < Supersampling; j++)
            {
                float dx = x + (j + 0.5f) / Supersampling, dy = y + (i + 0.5f) / Supersampling;
                bool hit = shape switch
                {
                    ToyShape.Circle => dx * dx + dy * dy <= h * h,
                    ToyShape.Square => Math.Abs(dx) <= h && Math.Abs(dy) <= h,
                    // apex up, base at the bottom of the box
                    _ => dy >= -h && dy <= h && Math.Abs(dx) <= (dy + h) / 2,
                };
                if (hit) inside++;
            }
        return inside / (float)(Supersampling * Supersampling);
    }

    /// <summary>The objects a prompt asks for, from captions in the generator's grammar ("a [small|large] &lt;colour&gt;
    /// &lt;shape&gt; at the &lt;place&gt;" joined by "and"); case, extra spaces and a final full stop are ignored.</summary>
    public static IReadOnlyList<ToyRequest> ParseCaption(string caption)
    {
        var text = Regex.Replace(caption.Trim().TrimEnd('.').ToLowerInvariant(), @"\s+", " ");
        var requests = new List<ToyRequest>();
        foreach (var part in text.Split(" and "))
        {
            var m = PhrasePattern.Match(part);
            if (!m.Success)
                throw new FormatException($"cannot parse '{part}' in caption '{caption}': " +
                                          $"expected 'a [small|large] <{string.Join("|", ColorWords)}> " +
                                          $"<{string.Join("|", ShapeWords)}> <{string.Join("|", PositionPhrases)}>', " +
                                          "phrases joined by 'and'");
            requests.Add(new ToyRequest((ToyShape)Array.IndexOf(ShapeWords, m.Groups["shape"].Value),
                (ToyColor)Array.IndexOf(ColorWords, m.Groups["color"].Value),
                (ToyPosition)Array.IndexOf(PositionPhrases, m.Groups["position"].Value),
                m.Groups["size"].Success ? (ToySize)Array.IndexOf(SizeWords, m.Groups["size"].Value) : null));
        }
        var repeated = requests.GroupBy(r => r.Position).FirstOrDefault(g => g.Count() > 1);
        if (repeated != null) throw new FormatException($"caption '{caption}' asks for two objects {Word(repeated.Key)}");
        return requests;
    }

    static readonly Regex PhrasePattern = new(
        $"^an? (?:(?<size>{string.Join("|", SizeWords)}) )?(?<color>{string.Join("|", ColorWords)}) " +
        $"(?<shape>{string.Join("|", ShapeWords)}) (?<position>{string.Join("|", PositionPhrases)})$", RegexOptions.CultureInvariant);
}
