using System.Runtime.CompilerServices;

namespace HyperSd.Diffusion.Tests;

static class TestSetup
{
    /// <summary>xunit runs test classes in parallel on the 2 CI cores: one LibTorch thread each avoids oversubscription,
    /// which makes small tensor ops many times slower.</summary>
    [ModuleInitializer]
    internal static void OneTensorThread() => TorchSharp.torch.set_num_threads(1);
}
