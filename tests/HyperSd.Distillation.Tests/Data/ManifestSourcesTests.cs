using HyperSd.Distillation.Data;

namespace HyperSd.Distillation.Tests.Data;

public sealed class ManifestSourcesTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("manifest-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    string Write(string name, string text)
    {
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>A manifest reaches only what lies beside it: an entry that is absolute or climbs out with '..' is refused,
    /// naming the manifest and line.</summary>
    [Theory]
    [InlineData("m.jsonl", "{\"file_name\": \"a.png\", \"text\": \"a\"}\n{\"file_name\": \"x/../../b.png\", \"text\": \"b\"}\n", ":2: image path")]
    [InlineData("m.jsonl", "{\"image\": \"/etc/passwd\", \"text\": \"a\"}\n", ":1: image path '/etc/passwd'")]
    [InlineData("m.csv", "file_name,text\na.png,a\n..\\b.png,b\n", ":3: image path")]
    public void A_manifest_entry_that_is_absolute_or_climbs_out_is_an_error(string name, string text, string expected)
    {
        var path = Write(name, text);
        var e = Assert.Throws<InvalidDataException>(() =>
            name.EndsWith(".csv") ? new CsvManifestSource(path) : (IImageCaptionSource)new JsonlManifestSource(path));
        Assert.Contains(path + expected, e.Message);
        Assert.EndsWith("must be relative to the manifest's folder, without '..'", e.Message);
    }

    [Fact]
    public void Jsonl_takes_either_field_name_keeps_order_and_skips_blank_lines()
    {
        var path = Write("m.jsonl", """
            {"file_name": "b.png", "text": "  a red circle "}

            {"image": "sub/a.png", "caption": "a blue square", "extra": 3}
            {"file_name": "c.png", "text": ""}
            """);
        var source = new JsonlManifestSource(path);
        Assert.Equal(["b.png", "sub/a.png", "c.png"], source.Items.Select(i => i.Id));
        Assert.Equal(["a red circle", "a blue square", ""], source.Items.Select(i => i.Caption));
        Assert.Equal([null, null, "empty caption"], source.Items.Select(i => i.Problem));
        Assert.Contains(Path.GetFullPath(path), source.Description);
        // paths resolve against the manifest's folder: the missing file surfaces when the image is opened
        var e = Assert.ThrowsAny<IOException>(() => source.Items[1].OpenImage());
        Assert.Contains(Path.Combine(dir, "sub", "a.png"), e.Message);
    }

    [Theory]
    [InlineData("{\"file_name\": \"a.png\", \"text\": \"x\"}\n{\"file_name\": \"b.png\"", ":2: invalid JSON")]
    [InlineData("{\"file_name\": \"a.png\", \"text\": \"x\"}\n\n{\"text\": \"y\"}", ":3: missing field 'file_name' (or 'image')")]
    [InlineData("{\"file_name\": \"a.png\"}", ":1: missing field 'text' (or 'caption')")]
    [InlineData("{\"file_name\": \"a.png\", \"caption\": 5}", ":1: field 'caption' must be a string, got Number")]
    [InlineData("{\"file_name\": \"a.png\", \"image\": \"b.png\", \"text\": \"x\"}", ":1: both 'file_name' and 'image' given")]
    [InlineData("[\"a.png\", \"x\"]", ":1: expected a JSON object, got Array")]
    public void Jsonl_errors_name_the_file_line_and_field(string text, string expected)
    {
        var path = Write("bad.jsonl", text);
        var e = Assert.Throws<InvalidDataException>(() => new JsonlManifestSource(path));
        Assert.StartsWith(path + expected, e.Message);
    }

    [Fact]
    public void Missing_manifests_are_errors_naming_the_path()
    {
        var missing = Path.Combine(dir, "none.jsonl");
        Assert.Contains(missing, Assert.Throws<FileNotFoundException>(() => new JsonlManifestSource(missing)).Message);
        Assert.Contains(missing, Assert.Throws<FileNotFoundException>(() => new CsvManifestSource(missing)).Message);
    }

    [Fact]
    public void Csv_follows_rfc_4180_quoting()
    {
        var path = Write("m.csv", "id,file_name,text\r\n" +
                                  "1,a.png,\"a red circle, small\"\r\n" +
                                  "2,\"b,1.png\",\"she said \"\"hi\"\"\nand left\"\r\n" +
                                  "\r\n" +
                                  "3,c.png,plain\n");
        var source = new CsvManifestSource(path);
        Assert.Equal(["a.png", "b,1.png", "c.png"], source.Items.Select(i => i.Id));
        Assert.Equal(["a red circle, small", "she said \"hi\"\nand left", "plain"], source.Items.Select(i => i.Caption));
    }

    [Fact]
    public void Csv_records_keep_empty_fields_and_their_starting_line()
    {
        var records = CsvManifestSource.ParseRecords("a,,\"\"\n\"x\ny\",z", "t.csv");
        Assert.Equal([1, 2], records.Select(r => r.Line));
        Assert.Equal(["a", "", ""], records[0].Fields);
        Assert.Equal(["x\ny", "z"], records[1].Fields);
    }

    [Fact]
    public void Csv_accepts_image_and_caption_columns()
    {
        var source = new CsvManifestSource(Write("m.csv", "caption,image\nhello,x.png\n"));
        Assert.Equal(("x.png", "hello"), (source.Items[0].Id, source.Items[0].Caption));
    }

    [Theory]
    [InlineData("file_name,text\na.png,\"x\ny\"\nb.png,y,extra\n", ":4: 3 fields, the header has 2")]
    [InlineData("file_name,text\na.png,\"never closed\n", ":2: field 2 opens a quote that is never closed")]
    [InlineData("file_name,text\na.png,\"x\"y\n", ":2: field 2: expected ',' or end of line after the closing quote, got 'y'")]
    [InlineData("file_name,text\na.png,say \"x\"\n", ":2: field 2: a quote inside an unquoted field")]
    [InlineData("file,text\na.png,x\n", ":1: the header needs one 'file_name' (or 'image') column, got none")]
    [InlineData("file_name,text,caption\na.png,x,y\n", ":1: the header needs one 'text' (or 'caption') column, got 'text', 'caption'")]
    public void Csv_errors_name_the_file_line_and_field(string text, string expected)
    {
        var path = Write("bad.csv", text);
        var e = Assert.Throws<InvalidDataException>(() => new CsvManifestSource(path));
        Assert.StartsWith(path + expected, e.Message);
    }

    [Fact]
    public void Empty_csv_is_an_error()
    {
        var path = Write("empty.csv", "");
        Assert.StartsWith(path + ": empty file", Assert.Throws<InvalidDataException>(() => new CsvManifestSource(path)).Message);
    }
}
