using HyperSd.Diffusion.TextEncoders;

namespace HyperSd.Distillation.Toy;

/// <summary>
/// The toy world's text side: a CLIP tokenizer laid out like CLIP's (256 byte tokens, their end-of-word forms, merge
/// results, then the special tokens) whose merges assemble every caption word into one token, so any text still
/// tokenises; and a tiny text encoder config sized to it.
/// </summary>
public static class ToyVocabulary
{
    const string StartOfText = "<|startoftext|>";
    const string EndOfText = "<|endoftext|>";
    const string EndOfWord = "</w>";

    public static CLIPTokenizer CreateTokenizer(int modelMaxLength = 77)
    {
        var vocab = new Dictionary<string, int>();
        void Add(string token) => vocab.TryAdd(token, vocab.Count);
        var alphabet = CLIPTokenizer.BytesToUnicode();
        foreach (var b in alphabet) Add(b);
        foreach (var b in alphabet) Add(b + EndOfWord);

        // Each new merge joins the first two pieces the current merges leave of a word. A merge appended last only fires
        // when no earlier one applies, so it never changes how an already-finished word tokenises.
        var merges = new List<(string, string)>();
        foreach (var word in ToyShapes.CaptionWords)
            for (var pieces = Build(vocab, merges, modelMaxLength).Tokenize(word);
                 pieces.Count > 1;
                 pieces = Build(vocab, merges, modelMaxLength).Tokenize(word))
            {
                merges.Add((pieces[0], pieces[1]));
                Add(pieces[0] + pieces[1]);
            }

        var tokenizer = Build(vocab, merges, modelMaxLength);
        foreach (var word in ToyShapes.CaptionWords)
            if (tokenizer.Tokenize(word) is not [var token] || token != word + EndOfWord)
                throw new InvalidOperationException($"toy vocabulary: caption word '{word}' tokenises as " +
                                                    $"[{string.Join(", ", tokenizer.Tokenize(word))}], expected '{word}{EndOfWord}'");
        return tokenizer;
    }

    /// <summary>A tiny <see cref="CLIPTextModel"/> config for <paramref name="tokenizer"/>'s vocabulary and special ids.</summary>
    public static CLIPTextConfig TextConfig(CLIPTokenizer tokenizer) => new CLIPTextConfig
    {
        VocabSize = tokenizer.VocabSize, HiddenSize = 32, IntermediateSize = 64, ProjectionDim = 32, NumHiddenLayers = 2,
        NumAttentionHeads = 4, MaxPositionEmbeddings = tokenizer.ModelMaxLength, PadTokenId = tokenizer.PadTokenId,
        BosTokenId = tokenizer.BosTokenId, EosTokenId = tokenizer.EosTokenId, Architectures = [nameof(CLIPTextModel)],
    }.Validate("toy text encoder config");

    /// <summary>Writes the toy tokenizer (vocab.json, merges.txt, tokenizer_config.json) into <paramref name="dir"/>.</summary>
    public static void Save(string dir) => CreateTokenizer().SavePretrained(dir);

    /// <summary>The tokenizer with the special tokens after the ordinary ones, as in CLIP's vocabulary.</summary>
    static CLIPTokenizer Build(Dictionary<string, int> vocab, List<(string, string)> merges, int modelMaxLength)
    {
        var full = new Dictionary<string, int>(vocab) { [StartOfText] = vocab.Count, [EndOfText] = vocab.Count + 1 };
        return new CLIPTokenizer(full, merges, modelMaxLength, StartOfText, EndOfText, EndOfText, EndOfText);
    }
}
