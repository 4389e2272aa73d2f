using System.Runtime.InteropServices;

namespace HyperSd.Diffusion;

/// <summary>
/// LibTorch's CPU kernel choices that this project overrides. oneDNN's AVX-512 convolution kernels computed wrong results
/// on an AMD EPYC with AVX-512 (VNNI, BF16, VP2INTERSECT): a toy UNet's forward differed by up to 0.024 between batch
/// sizes, enough to make training diverge; capped at AVX2 the results are right (TeacherTrajectoriesTests checks it).
/// </summary>
public static class CpuKernels
{
    public const string OneDnnMaxIsaVariable = "ONEDNN_MAX_CPU_ISA";

    /// <summary>Caps oneDNN at AVX2 unless <c>ONEDNN_MAX_CPU_ISA</c> is already set. Call before the first tensor operation:
    /// oneDNN reads it once. .NET's own environment does not reach native code on Linux, so this sets libc's.</summary>
    public static void Configure()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return;
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable(OneDnnMaxIsaVariable))) return;
        if (setenv(OneDnnMaxIsaVariable, "AVX2", 0) != 0) throw new InvalidOperationException($"could not set {OneDnnMaxIsaVariable}");
    }

    [DllImport("libc", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    static extern int setenv(string name, string value, int overwrite);
}
