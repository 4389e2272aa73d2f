using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.TextEncoders;

/// <summary>
/// CLIP's byte-level BPE tokenizer, as transformers' <c>CLIPTokenizer</c> (tokenizers backend): special tokens are cut
/// out of the raw text first; the rest is NFC-normalised, whitespace-collapsed, lowercased, split by CLIP's regex,
/// mapped byte → unicode and merged by BPE with a <c>&lt;/w&gt;</c> end-of-word suffix.
/// </summary>
public sealed partial class CLIPTokenizer
{
    const string EndOfWord = "</w>";

    readonly Dictionary<string, int> encoder;
    readonly Dictionary<(string, string), int> bpeRanks;
    readonly string[] byteEncoder = BytesToUnicode();
    readonly ConcurrentDictionary<string, string[]> cache = new();
    readonly string[] specialTokens;
    readonly (string Bos, string Eos, string Pad, string Unk) tokens;

    public int ModelMaxLength { get; }
    public int BosTokenId { get; }
    public int EosTokenId { get; }
    public int PadTokenId { get; }
    public int UnkTokenId { get; }
    public int VocabSize => encoder.Count;

    public CLIPTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<(string, string)> merges, int modelMaxLength = 77,
        string bosToken = "<|startoftext|>", string eosToken = "<|endoftext|>", string padToken = "<|endoftext|>",
        string unkToken = "<|endoftext|>")
    {
        encoder = new Dictionary<string, int>(vocab);
        bpeRanks = new Dictionary<(string, string), int>();
        foreach (var pair in merges) bpeRanks.TryAdd(pair, bpeRanks.Count);
        if (modelMaxLength < 2) throw new ArgumentException($"model_max_length must leave room for bos and eos, got {modelMaxLength}");
        ModelMaxLength = modelMaxLength;
        tokens = (bosToken, eosToken, padToken, unkToken);
        BosTokenId = SpecialId(bosToken, "bos_token");
        EosTokenId = SpecialId(eosToken, "eos_token");
        PadTokenId = SpecialId(padToken, "pad_token");
        UnkTokenId = SpecialId(unkToken, "unk_token");
        // longest first, so a special token that contains another one wins
        specialTokens = new[] { bosToken, eosToken, padToken, unkToken }.Distinct().OrderByDescending(t => t.Length).ToArray();
    }

    /// <summary>Writes <c>vocab.json</c>, <c>merges.txt</c> and <c>tokenizer_config.json</c> as transformers lays them out.</summary>
    public void SavePretrained(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(encoder.OrderBy(kv => kv.Value).ToDictionary()));
        File.WriteAllLines(Path.Combine(dir, "merges.txt"),
            bpeRanks.OrderBy(kv => kv.Value).Select(kv => $"{kv.Key.Item1} {kv.Key.Item2}").Prepend("#version: 0.2"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model_max_length"] = ModelMaxLength, ["bos_token"] = tokens.Bos, ["eos_token"] = tokens.Eos,
            ["unk_token"] = tokens.Unk, ["pad_token"] = tokens.Pad, ["do_lower_case"] = true, ["tokenizer_class"] = nameof(CLIPTokenizer),
        }));
    }

    /// <summary>Loads a tokenizer folder: <c>vocab.json</c>, <c>merges.txt</c> and (optional) <c>tokenizer_config.json</c>.</summary>
    public static CLIPTokenizer FromPretrained(string dir)
    {
        var vocabPath = Path.Combine(dir, "vocab.json");
        var mergesPath = Path.Combine(dir, "merges.txt");
        foreach (var required in new[] { vocabPath, mergesPath })
            if (!File.Exists(required)) throw new FileNotFoundException($"CLIP tokenizer file not found: {required}", required);

        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))
                    ?? throw new InvalidDataException($"{vocabPath}: empty vocabulary");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{vocabPath}: expected a JSON object of token → id: {e.Message}");
        }

        var merges = new List<(string, string)>();
        var lines = File.ReadAllLines(mergesPath);
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].StartsWith("#version", StringComparison.Ordinal) || lines[i].Trim().Length == 0) continue;
            var parts = lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2) throw new InvalidDataException($"{mergesPath}:{i + 1}: expected two symbols, got '{lines[i]}'");
            merges.Add((parts[0], parts[1]));
        }

        var configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = File.Exists(configPath) ? JsonNode.Parse(File.ReadAllText(configPath))?.AsObject() : null;
        string Token(string field, string fallback) => config?[field] switch
        {
            JsonValue v => v.GetValue<string>(),
            JsonObject o => o["content"]?.GetValue<string>() ?? fallback, // serialized AddedToken
            _ => fallback,
        };
        // transformers writes a huge sentinel when the length is unknown; CLIP's context is 77
        long maxLength = config?["model_max_length"]?.GetValue<double>() is double m && m <= int.MaxValue ? (long)m : 77;
        try
        {
            return new CLIPTokenizer(vocab, merges, (int)maxLength, Token("bos_token", "<|startoftext|>"),
                Token("eos_token", "<|endoftext|>"), Token("pad_token", "<|endoftext|>"), Token("unk_token", "<|endoftext|>"));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{dir}: {e.Message}");
        }
    }

    /// <summary>BPE tokens of a text, without bos/eos.</summary>
    public IReadOnlyList<string> Tokenize(string text)
    {
        var tokens = new List<string>();
        foreach (var (segment, special) in SplitOnSpecialTokens(text))
        {
            if (special) { tokens.Add(segment); continue; }
            foreach (Match word in Pattern().Matches(Normalize(segment)))
                tokens.AddRange(cache.GetOrAdd(ByteEncode(word.Value), Bpe));
        }
        return tokens;
    }

    /// <summary>Token ids of a text, without bos/eos (tokens missing from the vocabulary → unk).</summary>
    public List<int> TokenIds(string text) => Tokenize(text).Select(t => encoder.GetValueOrDefault(t, UnkTokenId)).ToList();

    /// <summary>bos + ids + eos, the content truncated to fit <see cref="ModelMaxLength"/>, then padded with the pad token
    /// (as <c>tokenizer(prompt, padding="max_length", truncation=True)</c>).</summary>
    public int[] Encode(string prompt)
    {
        var ids = TokenIds(prompt);
        var result = new int[ModelMaxLength];
        Array.Fill(result, PadTokenId);
        int n = Math.Min(ids.Count, ModelMaxLength - 2);
        result[0] = BosTokenId;
        ids.CopyTo(0, result, 1, n);
        result[n + 1] = EosTokenId;
        return result;
    }

    /// <summary>A batch of prompts as an int64 tensor [batch, model_max_length].</summary>
    public Tensor Encode(IReadOnlyList<string> prompts)
    {
        var ids = prompts.SelectMany(p => Encode(p).Select(i => (long)i)).ToArray();
        return tensor(ids, [prompts.Count, ModelMaxLength], ScalarType.Int64);
    }

    int SpecialId(string token, string field) => encoder.TryGetValue(token, out var id)
        ? id : throw new ArgumentException($"{field} '{token}' is not in the vocabulary");

    /// <summary>Cuts the raw text at exact (case-sensitive) occurrences of the special tokens, as added tokens are matched
    /// before normalisation.</summary>
    IEnumerable<(string Segment, bool Special)> SplitOnSpecialTokens(string text)
    {
        int start = 0, i = 0;
        while (i < text.Length)
        {
            var hit = specialTokens.FirstOrDefault(t => string.CompareOrdinal(text, i, t, 0, t.Length) == 0);
            if (hit is null) { i++; continue; }
            if (i > start) yield return (text[start..i], false);
            yield return (hit, true);
            i += hit.Length;
            start = i;
        }
        if (start < text.Length) yield return (text[start..], false);
    }

    // ToLowerInvariant is a simple case mapping, where Rust's to_lowercase is a full one (e.g. final sigma): rare scripts only
    static string Normalize(string text) => Whitespace().Replace(text.Normalize(NormalizationForm.FormC), " ").ToLowerInvariant();

    string ByteEncode(string word) => string.Concat(Encoding.UTF8.GetBytes(word).Select(b => byteEncoder[b]));

    /// <summary>Merges the lowest-ranked adjacent pair until none is in the merge table.</summary>
    string[] Bpe(string token)
    {
        var word = token.Select(c => c.ToString()).ToList(); // the byte alphabet is all in the BMP
        word[^1] += EndOfWord;
        while (word.Count > 1)
        {
            int bestRank = int.MaxValue;
            (string, string) best = default;
            for (int i = 0; i < word.Count - 1; i++)
                if (bpeRanks.TryGetValue((word[i], word[i + 1]), out var rank) && rank < bestRank)
                    (bestRank, best) = (rank, (word[i], word[i + 1]));
            if (bestRank == int.MaxValue) break;
            var merged = new List<string>(word.Count);
            for (int i = 0; i < word.Count; i++)
            {
                if (i < word.Count - 1 && word[i] == best.Item1 && word[i + 1] == best.Item2) { merged.Add(best.Item1 + best.Item2); i++; }
                else merged.Add(word[i]);
            }
            word = merged;
        }
        return word.ToArray();
    }

    /// <summary>GPT-2's reversible byte → printable-character table, so that BPE never sees whitespace or control bytes;
    /// also the base symbols of any CLIP vocabulary.</summary>
    public static string[] BytesToUnicode()
    {
        var table = new string[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = ((char)(printable ? b : 256 + next++)).ToString();
        }
        return table;
    }

    [GeneratedRegex(@"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex Pattern();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();
}
