using System.CommandLine;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Cli.Commands;

/// <summary>--device and --dtype, shared by every command that runs models.</summary>
public sealed class DeviceOptions
{
    public Option<string> Device { get; } = new("--device") { Description = "cpu, cuda or cuda:N", DefaultValueFactory = _ => "cpu" };
    public Option<string> DType { get; } =
        new("--dtype") { Description = "float32, float16 or bfloat16", DefaultValueFactory = _ => "float32" };

    public void AddTo(Command command)
    {
        command.Options.Add(Device);
        command.Options.Add(DType);
    }

    public (Device Device, ScalarType DType) Resolve(ParseResult parse)
    {
        var name = parse.GetValue(Device)!;
        var device = new Device(name);
        if (device.type == DeviceType.CUDA)
        {
            InitializeDeviceType(DeviceType.CUDA);
            if (!cuda.is_available())
                throw new InvalidOperationException(
                    $"--device {name}: CUDA is not available (build with -p:TorchBackend=cuda and a LibTorch CUDA)");
        }
        var dtype = parse.GetValue(DType) switch
        {
            "float32" or "fp32" => ScalarType.Float32,
            "float16" or "fp16" => ScalarType.Float16,
            "bfloat16" or "bf16" => ScalarType.BFloat16,
            var other => throw new ArgumentException($"--dtype '{other}': expected float32, float16 or bfloat16"),
        };
        return (device, dtype);
    }
}
