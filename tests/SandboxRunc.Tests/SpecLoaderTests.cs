using SandboxRunc.Oci;
using Xunit;

namespace SandboxRunc.Tests;

public class SpecLoaderTests
{
    [Fact]
    public void InvalidJsonNamesFileLineAndColumn()
    {
        var e = Assert.Throws<SpecException>(() => SpecLoader.Parse("{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {\"args\": [1,}\n}"u8, "config.json"));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("line 3", e.Message);
    }
}
