using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Rewards;

/// <summary>Ways a scene is made to fit its caption less well, as a generator's mistakes do.</summary>
public enum ToyPerturbation { Color, Shape, Size, Position, Missing, Extra }

/// <summary>A caption and two scenes for it, <see cref="Better"/> meeting strictly more of what the caption asks for.</summary>
public sealed record ToyScenePair(string Caption, ToyScene Better, ToyScene Worse);

/// <summary>
/// Preference pairs with known answers, the toy stand-in for ImageReward's human rankings: the caption's own scene, or the
/// scene with one mistake, against the same with one more mistake (wrong colour, shape, size or position, a missing object,
/// an extra one), kept only when the better one meets strictly more requested attributes (<see cref="MatchedAttributes"/>).
/// </summary>
public static class ToyPreferencePairs
{
    /// <summary>Requested attributes <paramref name="scene"/> meets, as <see cref="ToyStructuralReward"/> counts them: per
    /// requested object its shape, colour and (if asked) size in its cell; per cell the caption leaves empty, its emptiness.</summary>
    public static int MatchedAttributes(IReadOnlyList<ToyRequest> requests, ToyScene scene)
    {
        int matched = 0;
        foreach (var position in Enum.GetValues<ToyPosition>())
        {
            var r = requests.FirstOrDefault(x => x.Position == position);
            var o = scene.Objects.FirstOrDefault(x => x.Position == position);
            if (r is null) matched += o is null ? 1 : 0;
            else if (o is not null)
                matched += (o.Shape == r.Shape ? 1 : 0) + (o.Color == r.Color ? 1 : 0) + (r.Size is { } s && o.Size == s ? 1 : 0);
        }
        return matched;
    }

    /// <summary>One random mistake: an attribute of a random object changed, the object moved to a free cell or removed, or a
    /// random object added in a free cell.</summary>
    public static ToyScene Perturb(ToyScene scene, Random random)
    {
        var objects = scene.Objects.ToList();
        var free = Enum.GetValues<ToyPosition>().Where(p => objects.All(o => o.Position != p)).ToArray();
        var kinds = Enum.GetValues<ToyPerturbation>()
            .Where(k => objects.Count > 0 || k == ToyPerturbation.Extra)
            .Where(k => free.Length > 0 || k is not (ToyPerturbation.Position or ToyPerturbation.Extra)).ToArray();
        var kind = kinds[random.Next(kinds.Length)];
        if (kind == ToyPerturbation.Extra)
            return new ToyScene([.. objects, new ToyObject(Pick<ToyShape>(random), Pick<ToyColor>(random),
                free[random.Next(free.Length)], Pick<ToySize>(random))]);
        int i = random.Next(objects.Count);
        var o = objects[i];
        if (kind == ToyPerturbation.Missing)
        {
            objects.RemoveAt(i);
            return new ToyScene(objects);
        }
        objects[i] = kind switch
        {
            ToyPerturbation.Color => o with { Color = Other(o.Color, random) },
            ToyPerturbation.Shape => o with { Shape = Other(o.Shape, random) },
            ToyPerturbation.Size => o with { Size = Other(o.Size, random) },
            _ => o with { Position = free[random.Next(free.Length)] },
        };
        return new ToyScene(objects);
    }

    /// <summary>A pair for a random caption of <paramref name="split"/>; for the train split every scene shown is a train-split
    /// scene too, so that no held-out composition is ever seen.</summary>
    public static ToyScenePair Sample(Random random, ToyCaptionSplit split)
    {
        while (true)
        {
            var scene = ToyShapes.RandomScene(random, split: split);
            var requests = ToyShapes.ParseCaption(scene.Caption);
            var better = random.Next(2) == 0 ? scene : Perturb(scene, random);
            var worse = Perturb(better, random);
            if (MatchedAttributes(requests, worse) >= MatchedAttributes(requests, better)) continue;
            if (split == ToyCaptionSplit.Train && (ToyCaptions.IsHeldOut(better) || ToyCaptions.IsHeldOut(worse))) continue;
            return new ToyScenePair(scene.Caption, better, worse);
        }
    }

    public static IReadOnlyList<ToyScenePair> Sample(Random random, int count, ToyCaptionSplit split) =>
        Enumerable.Range(0, count).Select(_ => Sample(random, split)).ToArray();

    static T Pick<T>(Random random) where T : struct, Enum
    {
        var values = Enum.GetValues<T>();
        return values[random.Next(values.Length)];
    }

    static T Other<T>(T value, Random random) where T : struct, Enum
    {
        var others = Enum.GetValues<T>().Where(v => !v.Equals(value)).ToArray();
        return others[random.Next(others.Length)];
    }
}
