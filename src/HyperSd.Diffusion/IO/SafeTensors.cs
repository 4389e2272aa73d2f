using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.IO;

/// <summary>
/// Reads and writes the safetensors format (8-byte little-endian header length, JSON header, raw little-endian
/// data). The only weight format this project loads: it cannot run code, unlike pickle checkpoints.
/// </summary>
public static class SafeTensors
{
    static readonly Dictionary<string, ScalarType> DTypes = new()
    {
        ["F64"] = ScalarType.Float64, ["F32"] = ScalarType.Float32, ["F16"] = ScalarType.Float16,
        ["BF16"] = ScalarType.BFloat16, ["I64"] = ScalarType.Int64, ["I32"] = ScalarType.Int32,
        ["I16"] = ScalarType.Int16, ["I8"] = ScalarType.Int8, ["U8"] = ScalarType.Byte, ["BOOL"] = ScalarType.Bool,
    };

    /// <summary>Names, dtypes and shapes in a file, without reading the data.</summary>
    public static IReadOnlyDictionary<string, (string DType, long[] Shape)> ReadHeader(string path)
    {
        using var stream = OpenChecked(path);
        var (header, _) = ReadHeaderJson(stream, path);
        var result = new Dictionary<string, (string, long[])>();
        foreach (var (name, node) in header)
            if (name != "__metadata__")
                result[name] = (node!["dtype"]!.GetValue<string>(), node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray());
        return result;
    }

    /// <summary>The free-form string metadata stored in the header (may be empty).</summary>
    public static IReadOnlyDictionary<string, string> ReadMetadata(string path)
    {
        using var stream = OpenChecked(path);
        var (header, _) = ReadHeaderJson(stream, path);
        return header["__metadata__"] is JsonObject meta
            ? meta.ToDictionary(kv => kv.Key, kv => kv.Value?.GetValue<string>() ?? "")
            : new Dictionary<string, string>();
    }

    /// <summary>Loads every tensor (CPU, stored dtype). <paramref name="filter"/> skips tensors whose name it rejects.</summary>
    public static Dictionary<string, Tensor> Load(string path, Func<string, bool>? filter = null)
    {
        using var stream = OpenChecked(path);
        var (header, dataStart) = ReadHeaderJson(stream, path);
        long dataLength = stream.Length - dataStart;
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__" || (filter != null && !filter(name))) continue;
            var dtypeName = node!["dtype"]!.GetValue<string>();
            if (!DTypes.TryGetValue(dtypeName, out var dtype))
                throw new InvalidDataException($"{path}: tensor '{name}' has unsupported dtype {dtypeName}");
            var shape = node["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
            var offsets = node["data_offsets"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
            long begin = offsets[0], end = offsets[1];
            long expected = shape.Aggregate(1L, (a, b) => a * b) * ElementSize(dtype);
            if (end - begin != expected)
                throw new InvalidDataException($"{path}: tensor '{name}' holds {end - begin} bytes, " +
                                               $"its shape [{string.Join(", ", shape)}] of {dtypeName} needs {expected}");
            if (end > dataLength)
                throw new InvalidDataException(
                    $"{path}: truncated: tensor '{name}' ends at byte {dataStart + end} but the file has {stream.Length}");
            var bytes = new byte[expected];
            stream.Position = dataStart + begin;
            stream.ReadExactly(bytes);
            var tensor = torch.empty(shape, dtype);
            tensor.bytes = bytes;
            result[name] = tensor;
        }
        return result;
    }

    /// <summary>Writes tensors (any device; stored as their dtype) atomically: a temp file, then a rename.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
            header["__metadata__"] = new JsonObject(
                metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
        var blobs = new List<byte[]>();
        long offset = 0;
        foreach (var (name, tensor) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            using var cpu = tensor.detach().cpu().contiguous();
            var bytes = cpu.bytes.ToArray();
            header[name] = new JsonObject
            {
                ["dtype"] = DTypes.First(kv => kv.Value == cpu.dtype).Key,
                ["shape"] = new JsonArray(cpu.shape.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray()),
                ["data_offsets"] = new JsonArray(JsonValue.Create(offset), JsonValue.Create(offset + bytes.Length)),
            };
            blobs.Add(bytes);
            offset += bytes.Length;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padding = (8 - json.Length % 8) % 8; // keeps tensor data 8-byte aligned, as the reference writer does
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        using (var file = File.Create(tmp))
        {
            file.Write(BitConverter.GetBytes((ulong)(json.Length + padding)));
            file.Write(json);
            for (int i = 0; i < padding; i++) file.WriteByte((byte)' ');
            foreach (var blob in blobs) file.Write(blob);
        }
        File.Move(tmp, path, overwrite: true);
    }

    static FileStream OpenChecked(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"safetensors file not found: {path}", path);
        CheckNotPickle(path);
        return File.OpenRead(path);
    }

    /// <summary>Refuses pickle-based checkpoints (.ckpt/.pt/.bin zip or raw pickle): loading them can run code.</summary>
    public static void CheckNotPickle(string path)
    {
        var ext = Path.GetExtension(path).ToLowerInvariant();
        Span<byte> head = stackalloc byte[9];
        using (var f = File.OpenRead(path)) head = head[..f.Read(head)];
        // A safetensors file has '{' after its 8-byte header length (which itself may start with any byte).
        bool safetensors = head.Length == 9 && head[8] == (byte)'{';
        bool zip = head.Length >= 2 && head[0] == (byte)'P' && head[1] == (byte)'K';
        bool pickle = head.Length >= 1 && head[0] == 0x80; // pickle protocol opcode
        if (ext is ".ckpt" or ".pt" or ".pth" or ".bin" or ".pkl" || (!safetensors && (zip || pickle)))
            throw new NotSupportedException(
                $"{path}: pickle checkpoints are refused (loading them can execute arbitrary code); convert it to .safetensors first");
    }

    static (JsonObject Header, long DataStart) ReadHeaderJson(FileStream stream, string path)
    {
        if (stream.Length < 8) throw new InvalidDataException($"{path}: truncated: {stream.Length} bytes, not a safetensors file");
        Span<byte> lenBytes = stackalloc byte[8];
        stream.ReadExactly(lenBytes);
        ulong len = BitConverter.ToUInt64(lenBytes);
        if (len > (ulong)(stream.Length - 8) || len > 100_000_000)
            throw new InvalidDataException(
                $"{path}: header length {len} exceeds the file ({stream.Length} bytes): truncated or not safetensors");
        var json = new byte[len];
        stream.ReadExactly(json);
        try
        {
            return (JsonNode.Parse(json)!.AsObject(), 8 + (long)len);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: the safetensors header is not valid JSON: {e.Message}");
        }
    }

    static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        _ => 1,
    };
}
