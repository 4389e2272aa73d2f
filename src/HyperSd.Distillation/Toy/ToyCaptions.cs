namespace HyperSd.Distillation.Toy;

/// <summary>Which part of the toy caption space: what models may train on, or what only evaluation sees.</summary>
public enum ToyCaptionSplit { Train, HeldOut }

/// <summary>
/// The toy world's fixed caption split. Whole compositions are held out, so that evaluation asks for scenes no trained
/// model (teacher, students, reward models) has seen in any caption; every word, shape–colour pair and position is
/// still seen in training, only the combinations are new. Sizes play no part: a composition is held out with both sizes.
/// <list type="number">
/// <item>Each of the 12 shape–colour pairs is held out at one position cell, cell (4·shape + colour) mod 5 (enum
/// order: circle, square, triangle; red, green, blue, yellow; top left, top right, bottom left, bottom right, center):
/// e.g. a red circle at the top left, a green square at the top left, a yellow triangle at the bottom right. Any caption
/// with such an object is held out, one object or two: 24 of the 120 one-object captions.</item>
/// <item>Of the two-object combinations of the other 48 placements, one in eight is held out, chosen by a fixed hash of
/// the unordered pair of placements (so both caption orders and all four size choices go together).</item>
/// </list>
/// That holds out 24 one-object and 5,048 two-object captions of 11,640 (120 + 11,520). The recognizer, the judge of
/// adherence, is trained on the whole space: it must read held-out scenes as well as seen ones.
/// </summary>
public static class ToyCaptions
{
    /// <summary>One in this many two-object combinations of training placements is held out.</summary>
    public const int HeldOutPairShare = 8;

    /// <summary>Whether the shape–colour pair is held out at this position cell (rule 1).</summary>
    public static bool IsHeldOutPlacement(ToyShape shape, ToyColor color, ToyPosition position) =>
        (4 * (int)shape + (int)color) % ToyShapes.Positions == (int)position;

    public static ToyCaptionSplit SplitOf(ToyScene scene) =>
        SplitOf(scene.Objects.Select(o => (o.Shape, o.Color, o.Position)).ToList());

    /// <summary>The split of a caption in the generator's grammar (sizes optional; see <see cref="ToyShapes.ParseCaption"/>).</summary>
    public static ToyCaptionSplit SplitOf(string caption) =>
        SplitOf(ToyShapes.ParseCaption(caption).Select(r => (r.Shape, r.Color, r.Position)).ToList());

    public static bool IsHeldOut(ToyScene scene) => SplitOf(scene) == ToyCaptionSplit.HeldOut;
    public static bool IsHeldOut(string caption) => SplitOf(caption) == ToyCaptionSplit.HeldOut;

    static ToyCaptionSplit SplitOf(IReadOnlyList<(ToyShape Shape, ToyColor Color, ToyPosition Position)> objects)
    {
        if (objects.Any(o => IsHeldOutPlacement(o.Shape, o.Color, o.Position))) return ToyCaptionSplit.HeldOut;
        if (objects.Count == 2)
        {
            int a = Placement(objects[0]), b = Placement(objects[1]);
            if (Mix((ulong)(Math.Min(a, b) * 64 + Math.Max(a, b))) % HeldOutPairShare == 0) return ToyCaptionSplit.HeldOut;
        }
        return ToyCaptionSplit.Train;
    }

    /// <summary>Every caption of <paramref name="split"/> (with sizes), one-object ones first, in enum order.</summary>
    public static IReadOnlyList<string> All(ToyCaptionSplit split) =>
        AllScenes().Where(s => SplitOf(s) == split).Select(s => s.Caption).ToList();

    /// <summary>Every scene the generator can draw: 120 one-object and 11,520 two-object (ordered) scenes.</summary>
    public static IEnumerable<ToyScene> AllScenes()
    {
        var objects = (from position in Enum.GetValues<ToyPosition>()
                       from shape in Enum.GetValues<ToyShape>()
                       from color in Enum.GetValues<ToyColor>()
                       from size in Enum.GetValues<ToySize>()
                       select new ToyObject(shape, color, position, size)).ToList();
        foreach (var o in objects) yield return new ToyScene([o]);
        foreach (var first in objects)
            foreach (var second in objects)
                if (first.Position != second.Position)
                    yield return new ToyScene([first, second]);
    }

    static int Placement((ToyShape Shape, ToyColor Color, ToyPosition Position) o) =>
        ((int)o.Position * Enum.GetValues<ToyShape>().Length + (int)o.Shape) * Enum.GetValues<ToyColor>().Length + (int)o.Color;

    /// <summary>SplitMix64's finaliser: a fixed, platform-independent hash (string.GetHashCode is randomised per process).</summary>
    static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
