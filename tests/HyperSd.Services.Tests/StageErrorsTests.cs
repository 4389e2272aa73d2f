using HyperSd.Diffusion.IO;
using HyperSd.Services.Execution;

namespace HyperSd.Services.Tests;

/// <summary>Which failures a stage retries: bad data fails at once, I/O is retried.</summary>
public sealed class StageErrorsTests
{
    [Fact]
    public void Weights_that_do_not_fit_their_model_fail_at_once_and_io_is_retried()
    {
        Assert.False(StageErrors.IsTransient(new WeightLoadException("ToyRecognizer", ["missing key 'fc.bias' (expected shape [8])"])));
        Assert.False(StageErrors.IsTransient(new InvalidDataException("a LoRA for another base")));
        Assert.True(StageErrors.IsTransient(new IOException("disk full")));
    }
}
