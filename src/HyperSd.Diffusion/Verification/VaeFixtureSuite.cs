using HyperSd.Diffusion.Models;
using HyperSd.Diffusion.Models.Autoencoders;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>Checks AutoencoderKL against <c>vae_sd15</c>: image → posterior mean and logvar; latents → decoded image
/// (and the parameter count when fixture.json gives one).</summary>
public sealed class VaeFixtureSuite : IFixtureSuite
{
    public string Folder => "vae_sd15";

    public IEnumerable<FixtureCheck> Run(string dir)
    {
        var fixture = new FixtureFolder(dir);
        var checks = new List<FixtureCheck>();
        var io = fixture.Io();
        try
        {
            using var vae = AutoencoderKL.FromPretrained(dir);
            using var _ = no_grad();
            using (var posterior = vae.Encode(io["image"]))
            {
                checks.Add(FixtureCheck.Compare("posterior mean", posterior.Mean, io["expected_mean"], fixture.Atol, fixture.Rtol));
                checks.Add(FixtureCheck.Compare("posterior logvar", posterior.LogVar, io["expected_logvar"], fixture.Atol, fixture.Rtol));
            }
            using (var decoded = vae.Decode(io["latents"]))
                checks.Add(FixtureCheck.Compare("decode", decoded, io["expected_decoded"], fixture.Atol, fixture.Rtol));
            if (fixture.Json["parameters"] is { } expected)
                checks.Add(UnetFixtureSuite.ParameterCheck(PretrainedModel.ParameterCount(vae), expected.GetValue<long>()));
        }
        finally
        {
            foreach (var t in io.Values) t.Dispose();
        }
        return checks;
    }
}
