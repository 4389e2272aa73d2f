using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Configuration;

namespace HyperSd.Services.Runs;

/// <summary>A path a recipe or job names that may not be used; <see cref="Field"/> names the recipe or job field.</summary>
public sealed class InputPathException(string field, string problem) : ArgumentException($"{field}: {problem}")
{
    public string Field { get; } = field;
    public string Problem { get; } = problem;
}

/// <summary>
/// Where the files a recipe or a generation job names may be, and how large the ones read at submission may be. A path
/// resolves against its root when relative and, after every symbolic link, must stay under that root: the submitter
/// chooses what the workers read, never anything else the host holds (keys, other users' files, devices).
/// </summary>
public sealed class InputRoots
{
    /// <summary>dataset.path, evaluation.prompts_file, generation.prompts_file and a job's prompts file. Default: the current
    /// directory, so that the embedded CLI (<c>hypersd run recipes/toy.yaml</c> from the checkout) reads what sits beside it;
    /// a deployment sets its data volume (HyperSd__DataRoot).</summary>
    public string DataRoot { get; set; } = ".";
    /// <summary>model.path, model.tokenizer and a job's model, tokenizer and LoRAs. Default: the current directory; a
    /// deployment sets its weights volume (HyperSd__ModelsRoot). The built-in toy teacher is not a recipe path.</summary>
    public string ModelsRoot { get; set; } = ".";
    /// <summary>The most a prompts file may hold: prompts are lines of text, not data.</summary>
    public long MaxPromptsFileBytes { get; set; } = 4 << 20;
    /// <summary>The most a dataset manifest (jsonl, csv) may hold; it is read whole at submission to check its entries.</summary>
    public long MaxManifestBytes { get; set; } = 256 << 20;

    /// <summary>The keys DataRoot, ModelsRoot, MaxPromptsFileBytes and MaxManifestBytes of <paramref name="section"/>.</summary>
    public static InputRoots FromConfiguration(IConfiguration section)
    {
        var o = new InputRoots();
        long? Number(string key) => section[key] is { Length: > 0 } v ? long.Parse(v, CultureInfo.InvariantCulture) : null;
        o.DataRoot = section["DataRoot"] is { Length: > 0 } data ? data : o.DataRoot;
        o.ModelsRoot = section["ModelsRoot"] is { Length: > 0 } models ? models : o.ModelsRoot;
        o.MaxPromptsFileBytes = Number("MaxPromptsFileBytes") ?? o.MaxPromptsFileBytes;
        o.MaxManifestBytes = Number("MaxManifestBytes") ?? o.MaxManifestBytes;
        return o.Validate();
    }

    public InputRoots Validate()
    {
        foreach (var (name, value) in new[] { ("MaxPromptsFileBytes", MaxPromptsFileBytes), ("MaxManifestBytes", MaxManifestBytes) })
            if (value < 1) throw new ArgumentException($"worker {name}: must be at least 1, got {value}");
        return this;
    }

    /// <summary>A file or folder under the data root, as its real path (no links left).</summary>
    public string Data(string path, string field) => Resolve(DataRoot, "data root", path, field);

    /// <summary>A file or folder under the models root, as its real path (no links left).</summary>
    public string Model(string path, string field) => Resolve(ModelsRoot, "models root", path, field);

    /// <summary>A regular file under the data root: its real path after its size is checked against
    /// <paramref name="maxBytes"/>. A device (/dev/zero), a pipe or a folder is refused before anything is read.</summary>
    public string DataFile(string path, string field, long maxBytes)
    {
        var real = Data(path, field);
        var (regular, size) = Stat(real);
        if (!regular) throw new InputPathException(field, $"'{path}' is not a regular file (a device, pipe or folder?)");
        if (size > maxBytes) throw new InputPathException(field, $"'{path}' is {Bytes(size)} bytes; at most {Bytes(maxBytes)} are read");
        return real;
    }

    /// <summary>The bytes of <see cref="DataFile"/>; reading stops at the limit should the file grow meanwhile.</summary>
    public byte[] ReadDataFile(string path, string field, long maxBytes)
    {
        using var stream = new FileStream(DataFile(path, field, maxBytes), FileMode.Open, FileAccess.Read);
        using var bytes = new MemoryStream();
        var chunk = new byte[81920];
        int n;
        while ((n = stream.Read(chunk)) > 0)
        {
            if (bytes.Length + n > maxBytes)
                throw new InputPathException(field, $"'{path}' grew past {Bytes(maxBytes)} bytes while it was read");
            bytes.Write(chunk, 0, n);
        }
        return bytes.ToArray();
    }

    static string Bytes(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    static string Resolve(string root, string rootName, string path, string field)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new InputPathException(field, "empty: expected a path");
        var fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        var realRoot = RealPath(fullRoot) ?? throw new InputPathException(field, $"the {rootName} '{fullRoot}' does not exist");
        var full = Path.GetFullPath(path, fullRoot);
        // the written path first: '..' or an absolute path elsewhere is refused whether or not it exists
        if (!Under(full, fullRoot) && !Under(full, realRoot))
            throw new InputPathException(field, $"'{path}' is outside the {rootName} '{fullRoot}'");
        var real = RealPath(full) ?? throw new InputPathException(field, $"no such file or folder: '{path}' (under the {rootName})");
        if (!Under(real, realRoot))
            throw new InputPathException(field, $"'{path}' leads through a link to '{real}', outside the {rootName} '{realRoot}'");
        return real;
    }

    static bool Under(string path, string root) =>
        path == root || path.StartsWith(root == "/" ? root : root + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The path with every link followed (realpath(3)); null if it does not exist.</summary>
    static string? RealPath(string path)
    {
        var resolved = realpath(path, IntPtr.Zero);
        if (resolved == IntPtr.Zero) return null;
        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            free(resolved);
        }
    }

    /// <summary>Whether the file is a regular one, and its size, from statx(2) (whose layout is the same on every Linux
    /// architecture): .NET tells a device from a file by neither its attributes nor its length.</summary>
    static (bool Regular, long Size) Stat(string path)
    {
        const int AtFdCwd = -100, TypeAndSize = 0x1 | 0x200, ModeOffset = 28, SizeOffset = 40, FileType = 0xF000, Regular = 0x8000;
        var buffer = new byte[256];
        if (statx(AtFdCwd, path, 0, TypeAndSize, buffer) != 0)
            throw new IOException($"cannot stat '{path}': errno {Marshal.GetLastPInvokeError()}");
        return ((BitConverter.ToUInt16(buffer, ModeOffset) & FileType) == Regular, BitConverter.ToInt64(buffer, SizeOffset));
    }

    [DllImport("libc", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false)]
    static extern IntPtr realpath(string path, IntPtr resolved);

    [DllImport("libc")]
    static extern void free(IntPtr pointer);

    [DllImport("libc", SetLastError = true, CharSet = CharSet.Ansi, BestFitMapping = false)]
    static extern int statx(int dirfd, string path, int flags, uint mask, byte[] buffer);
}
