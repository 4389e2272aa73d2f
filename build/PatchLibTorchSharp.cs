// Marks the GLIBCXX_3.4.32 requirement of libLibTorchSharp.so as weak (VER_FLG_WEAK) so the library loads on
// hosts whose libstdc++ stops at 3.4.30 (Debian 12). The one symbol bound to that version,
// std::ios_base_library_init, is never called. Hosts that already have the version are left untouched.
var files = new System.Collections.Generic.List<string>();
foreach (var dir in Directories.Split(';'))
    if (System.IO.Directory.Exists(dir))
        files.AddRange(System.IO.Directory.GetFiles(dir, "libLibTorchSharp.so", System.IO.SearchOption.AllDirectories));
if (files.Count == 0 || System.Environment.OSVersion.Platform != System.PlatformID.Unix) return true;
const string wanted = "GLIBCXX_3.4.32";
var wantedBytes = System.Text.Encoding.ASCII.GetBytes(wanted);
foreach (var candidate in new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
                                  "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6" })
{
    if (!System.IO.File.Exists(candidate)) continue;
    var lib = System.IO.File.ReadAllBytes(candidate);
    for (int i = 0; i + wantedBytes.Length <= lib.Length; i++)
    {
        int j = 0;
        while (j < wantedBytes.Length && lib[i + j] == wantedBytes[j]) j++;
        if (j == wantedBytes.Length) return true;
    }
    break;
}
foreach (var file in files)
{
    var b = System.IO.File.ReadAllBytes(file);
    if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[4] != 2) continue; // ELF64 only
    ulong shoff = System.BitConverter.ToUInt64(b, 0x28);
    int shentsize = System.BitConverter.ToUInt16(b, 0x3A), shnum = System.BitConverter.ToUInt16(b, 0x3C);
    bool changed = false;
    for (int i = 0; i < shnum; i++)
    {
        int sh = (int)shoff + i * shentsize;
        if (System.BitConverter.ToUInt32(b, sh + 4) != 0x6ffffffe) continue; // SHT_GNU_verneed
        int off = (int)System.BitConverter.ToUInt64(b, sh + 0x18);
        int link = (int)System.BitConverter.ToUInt32(b, sh + 0x28), count = (int)System.BitConverter.ToUInt32(b, sh + 0x2C);
        int strtab = (int)System.BitConverter.ToUInt64(b, (int)shoff + link * shentsize + 0x18);
        for (int n = 0, vn = off; n < count; n++)
        {
            int cnt = System.BitConverter.ToUInt16(b, vn + 2);
            for (int a = 0, vna = vn + (int)System.BitConverter.ToUInt32(b, vn + 8); a < cnt; a++)
            {
                int name = strtab + (int)System.BitConverter.ToUInt32(b, vna + 8), end = name;
                while (b[end] != 0) end++;
                if (System.Text.Encoding.ASCII.GetString(b, name, end - name) == wanted && (b[vna + 4] & 2) == 0)
                {
                    b[vna + 4] |= 2;
                    changed = true;
                }
                vna += (int)System.BitConverter.ToUInt32(b, vna + 12);
            }
            vn += (int)System.BitConverter.ToUInt32(b, vn + 12);
        }
    }
    if (!changed) continue;
    var tmp = file + ".patching";
    System.IO.File.WriteAllBytes(tmp, b);
    System.IO.File.Copy(tmp, file, true);
    System.IO.File.Delete(tmp);
    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, $"Marked {wanted} weak in {file} (host libstdc++ lacks it)");
}
