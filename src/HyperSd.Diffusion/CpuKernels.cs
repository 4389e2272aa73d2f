using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;

namespace HyperSd.Diffusion;

/// <summary>
/// LibTorch's CPU kernel choices that this project overrides: oneDNN (MKLDNN) and NNPACK are switched off, so CPU convolutions run
/// on ATen's own im2col + BLAS kernels. On an AMD EPYC with AVX-512 (Zen 4/5), LibTorch 2.10's oneDNN convolutions gave
/// wrong forwards (up to 0.024 between batch sizes) and backward passes that returned NaN from finite inputs, in some
/// runs and not others (<c>CpuKernelsTests</c> pins it). CUDA is untouched: this only changes the CPU dispatch.
/// </summary>
public static class CpuKernels
{
    /// <summary>Runs when this assembly is first used, so every process that touches a model (CLI, workers, tests) gets it
    /// before its first convolution.</summary>
    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255", Justification = "process-wide LibTorch setting")]
    internal static void Configure()
    {
        torch.InitializeDeviceType(DeviceType.CPU); // loads LibTorch, which the calls below bind to
        SetUserEnabledMkldnn(GlobalContext(), false);
        // without oneDNN, convolutions try NNPACK, which may report the CPU unsupported and then warns at every call
        SetUserEnabledNnpack(GlobalContext(), false);
    }

    /// <summary>Whether LibTorch may use oneDNN for CPU kernels (false once this assembly is loaded).</summary>
    public static bool MkldnnEnabled => UserEnabledMkldnn(GlobalContext());

    // at::globalContext() and its oneDNN switch: the C++ API that torch.backends.mkldnn.enabled sets in Python;
    // TorchSharp does not wrap it. Member functions take `this` first.
    [DllImport("torch_cpu", EntryPoint = "_ZN2at13globalContextEv")]
    static extern IntPtr GlobalContext();

    [DllImport("torch_cpu", EntryPoint = "_ZN2at7Context20setUserEnabledMkldnnEb")]
    static extern void SetUserEnabledMkldnn(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);

    [DllImport("torch_cpu", EntryPoint = "_ZN2at7Context20setUserEnabledNNPACKEb")]
    static extern void SetUserEnabledNnpack(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool enabled);

    [DllImport("torch_cpu", EntryPoint = "_ZNK2at7Context17userEnabledMkldnnEv")]
    [return: MarshalAs(UnmanagedType.U1)]
    static extern bool UserEnabledMkldnn(IntPtr context);
}
