using HyperSd.Diffusion.TextEncoders;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>CLIP tokenizer ids and CLIPTextModel outputs against transformers (<c>text_sd15</c>: tokenizer/, text_encoder/,
/// fixture.json with prompts and input_ids, io.safetensors with the model's inputs and outputs).</summary>
public sealed class TextFixtureSuite : IFixtureSuite
{
    public string Folder => "text_sd15";

    public IEnumerable<FixtureCheck> Run(string folder)
    {
        var fixture = new FixtureFolder(folder);
        var tokenizer = CLIPTokenizer.FromPretrained(Path.Combine(folder, "tokenizer"));
        var prompts = fixture.Json["prompts"]!.AsArray().Select(p => p!.GetValue<string>()).ToList();
        var expectedIds = fixture.Json["input_ids"]!.AsArray()
            .Select(row => row!.AsArray().Select(i => i!.GetValue<int>()).ToList()).ToList();
        if (prompts.Count != expectedIds.Count)
            throw new InvalidDataException($"{folder}/fixture.json: {prompts.Count} prompts but {expectedIds.Count} input_ids rows");
        for (int i = 0; i < prompts.Count; i++)
            yield return FixtureCheck.Exact(
                $"tokenizer/input_ids[{i}]", tokenizer.Encode(prompts[i]), expectedIds[i], $"prompt \"{prompts[i]}\"");

        var io = fixture.Io();
        try
        {
            using var model = CLIPTextModel.FromPretrained(Path.Combine(folder, "text_encoder"));
            using var _ = no_grad();
            using var output = model.forward(io["input_ids"]);
            yield return FixtureCheck.Compare(
                "last_hidden_state", output.LastHiddenState, io["expected_last_hidden_state"], fixture.Atol, fixture.Rtol);
            yield return FixtureCheck.Compare(
                "pooler_output", output.PoolerOutput, io["expected_pooler_output"], fixture.Atol, fixture.Rtol);
            yield return FixtureCheck.Compare("penultimate_hidden_state", output.PenultimateHiddenState,
                io["expected_penultimate_hidden_state"], fixture.Atol, fixture.Rtol);
        }
        finally
        {
            foreach (var t in io.Values) t.Dispose();
        }
    }
}
